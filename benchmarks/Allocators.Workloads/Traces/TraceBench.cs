namespace Allocators.Workloads.Traces;

/// <summary>One trace replayed at one memory size: the faults of each memory given, of plain LRU and of MIN.</summary>
/// <param name="Trace">The trace.</param>
/// <param name="MemoryPages">Frames of every memory in the row.</param>
/// <param name="Systems">Replays on the memories under test (empty when only the simulators ran).</param>
/// <param name="Lru">Replay on <see cref="LruSimulator"/>.</param>
/// <param name="Min">Replay on <see cref="BeladyMin"/>.</param>
internal sealed record TraceRow(PageTrace Trace, int MemoryPages, IReadOnlyList<ReplayResult> Systems, ReplayResult Lru, ReplayResult Min)
{
    /// <summary>Faults of <paramref name="result"/> over MIN's (1 when MIN had none).</summary>
    public double RatioToMin(ReplayResult result) => Min.MajorFaults > 0 ? (double)result.MajorFaults / Min.MajorFaults : 1;
}

/// <summary>
/// The reclaim benchmark: "fault count against the optimum" over <see cref="PageTrace.Standard"/>, and the host
/// throughput reference for a random working set twice the memory.
/// </summary>
internal static class TraceBench
{
    /// <summary>
    /// Replays each standard trace for <paramref name="memoryPages"/> frames through the memories that
    /// <paramref name="systems"/> builds (given the frame count and the trace; null: none), then through LRU and MIN.
    /// </summary>
    public static List<TraceRow> Run(int memoryPages, int length = PageTrace.DefaultLength, ulong seed = PageTrace.DefaultSeed,
        Func<int, PageTrace, IEnumerable<IPagedMemory>>? systems = null)
    {
        var rows = new List<TraceRow>();
        foreach (var trace in PageTrace.Standard(memoryPages, length, seed))
        {
            var measured = new List<ReplayResult>();
            foreach (var memory in systems?.Invoke(memoryPages, trace) ?? [])
            {
                measured.Add(TraceReplay.Run(memory, trace.Accesses));
                if (memory is SwappingAddressSpace { StampErrors: > 0 } bad)
                    throw new InvalidOperationException($"{bad.Name}: {bad.StampErrors} page stamps read back wrong on {trace.Name}");
                (memory as IDisposable)?.Dispose();
            }
            var lru = TraceReplay.Run(new LruSimulator(memoryPages), trace.Accesses);
            var min = TraceReplay.Run(new BeladyMin(trace.Accesses, memoryPages), trace.Accesses);
            rows.Add(new TraceRow(trace, memoryPages, measured, lru, min));
        }
        return rows;
    }

    /// <summary>
    /// The host reference of the throughput comparison: the uniform random trace over 2 x <paramref name="memoryPages"/>
    /// replayed on a <see cref="HostMmapWorkingSet"/> of that size.
    /// </summary>
    /// <exception cref="InvalidOperationException">A page stamp read back wrong: the numbers would be meaningless.</exception>
    public static ReplayResult HostThroughput(int memoryPages, int length = PageTrace.DefaultLength, ulong seed = PageTrace.DefaultSeed)
    {
        var trace = PageTrace.Uniform(memoryPages * 2, length, seed);
        using var host = new HostMmapWorkingSet(trace.Footprint);
        var result = TraceReplay.Run(host, trace.Accesses);
        long bad = host.StampErrors + host.Verify();
        if (bad != 0) throw new InvalidOperationException($"host mmap: {bad} page stamps read back wrong");
        return result;
    }

    /// <summary>
    /// The memory system's side of the throughput comparison: the same uniform random trace over 2 x
    /// <paramref name="memoryPages"/> through a <see cref="SwappingAddressSpace"/> of <paramref name="memoryPages"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">A page stamp read back wrong.</exception>
    public static ReplayResult SystemThroughput(int memoryPages, int length = PageTrace.DefaultLength, ulong seed = PageTrace.DefaultSeed)
    {
        var trace = PageTrace.Uniform(memoryPages * 2, length, seed);
        using var system = new SwappingAddressSpace(memoryPages, trace.Footprint);
        var result = TraceReplay.Run(system, trace.Accesses);
        if (system.StampErrors != 0) throw new InvalidOperationException($"memory system: {system.StampErrors} page stamps read back wrong");
        return result;
    }

    /// <summary>The memory system as the trace table's measured memory: one <see cref="SwappingAddressSpace"/> per trace.</summary>
    public static IEnumerable<IPagedMemory> WholeSystem(int memoryPages, PageTrace trace) => [new SwappingAddressSpace(memoryPages, trace.Footprint)];
}
