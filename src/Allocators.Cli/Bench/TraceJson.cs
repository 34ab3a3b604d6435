using Allocators.Workloads.Traces;

namespace Allocators.Cli.Bench;

/// <summary>What <c>bench -w traces --json</c> prints.</summary>
/// <param name="MemoryPages">Frames of every memory.</param>
/// <param name="Traces">One entry per trace.</param>
/// <param name="Host">The host mmap throughput reference.</param>
/// <param name="ReportPath">Where Traces.md went.</param>
internal sealed record TraceJsonReport(int MemoryPages, IReadOnlyList<TraceJsonRow> Traces, TraceJsonReplay Host, string ReportPath)
{
    /// <summary>The document of one run.</summary>
    public static TraceJsonReport Build(IReadOnlyList<TraceRow> rows, ReplayResult host, int memoryPages, string path)
        => new(memoryPages, [.. rows.Select(r => new TraceJsonRow(r.Trace.Name, r.Trace.Description, r.Trace.Footprint, r.Trace.Accesses.Length,
            r.Trace.ColdMisses, [.. r.Systems.Append(r.Lru).Append(r.Min).Select(x => Replay(x, r.RatioToMin(x)))]))], Replay(host, null), path);

    private static TraceJsonReplay Replay(ReplayResult r, double? ratio)
        => new(r.Memory, r.MajorFaults, ratio is { } x ? Math.Round(x, 4) : null, r.Elapsed.TotalSeconds, Math.Round(r.AccessesPerSecond));
}

/// <summary>One trace of <see cref="TraceJsonReport"/>.</summary>
/// <param name="Name">Trace name.</param>
/// <param name="Description">Its pattern and parameters.</param>
/// <param name="Footprint">Pages it may touch.</param>
/// <param name="Accesses">Its length.</param>
/// <param name="ColdMisses">Distinct pages.</param>
/// <param name="Replays">The memories under test, then LRU, then MIN.</param>
internal sealed record TraceJsonRow(string Name, string Description, int Footprint, int Accesses, int ColdMisses, IReadOnlyList<TraceJsonReplay> Replays);

/// <summary>One replay of <see cref="TraceJsonReport"/>.</summary>
/// <param name="Memory">What it ran on.</param>
/// <param name="MajorFaults">Its major faults.</param>
/// <param name="RatioToMin">Faults over MIN's (absent for the host reference).</param>
/// <param name="Seconds">Wall time.</param>
/// <param name="AccessesPerSecond">Throughput.</param>
internal sealed record TraceJsonReplay(string Memory, long MajorFaults, double? RatioToMin, double Seconds, double AccessesPerSecond);
