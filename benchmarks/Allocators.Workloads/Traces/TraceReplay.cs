using System.Diagnostics;

namespace Allocators.Workloads.Traces;

/// <summary>What one replay of a trace cost.</summary>
/// <param name="Memory">Name of what it ran on.</param>
/// <param name="Accesses">Touches replayed.</param>
/// <param name="MajorFaults">Major faults during the replay.</param>
/// <param name="Elapsed">Wall time of the replay.</param>
internal sealed record ReplayResult(string Memory, int Accesses, long MajorFaults, TimeSpan Elapsed, long PagesOut = 0)
{
    /// <summary>Pages touched per second.</summary>
    public double AccessesPerSecond => Elapsed.TotalSeconds > 0 ? Accesses / Elapsed.TotalSeconds : 0;
}

/// <summary>Replays page traces through an <see cref="IPagedMemory"/>.</summary>
internal static class TraceReplay
{
    /// <summary>Every this many accesses one is a write (the rest read), so dirty pages must be written back when evicted.</summary>
    public const int DefaultWriteEvery = 4;

    /// <summary>
    /// Touches every page of <paramref name="trace"/> in order on <paramref name="memory"/>; access i is a write when
    /// i is a multiple of <paramref name="writeEvery"/> (0: reads only). Faults are counted from the memory's own counter.
    /// </summary>
    public static ReplayResult Run(IPagedMemory memory, int[] trace, int writeEvery = DefaultWriteEvery)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(writeEvery);
        long before = memory.MajorFaults;
        long outBefore = memory.PagesOut;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < trace.Length; i++) memory.Touch(trace[i], writeEvery != 0 && i % writeEvery == 0);
        clock.Stop();
        return new ReplayResult(memory.Name, trace.Length, memory.MajorFaults - before, clock.Elapsed, memory.PagesOut - outBefore);
    }
}
