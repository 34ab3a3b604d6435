using Allocators.Workloads.Traces;

namespace Allocators.Tests.Traces;

/// <summary>The trace benchmark end to end at a small size: rows, table, and the host mmap reference.</summary>
public sealed class TraceBenchTests
{
    [Fact]
    public void TheTableHasEveryTraceWithLruAndMinAndTheSystemsGiven()
    {
        var rows = TraceBench.Run(128, 5_000, systems: (frames, _) => [new Renamed(new LruSimulator(frames), "lru-copy")]);
        Assert.Equal(["loop", "random", "zipf", "shifting"], rows.Select(r => r.Trace.Name));
        foreach (var r in rows)
        {
            Assert.True(r.Min.MajorFaults <= r.Lru.MajorFaults);
            Assert.Equal(r.Lru.MajorFaults, r.Systems.Single().MajorFaults);
        }
        string table = TraceTable.Faults(rows);
        Assert.Contains("| trace | memory pages | footprint | accesses | cold misses | lru-copy faults | LRU faults | MIN faults |", table, StringComparison.Ordinal);
        Assert.Contains("lru-copy: NOT within 1.5x MIN", table, StringComparison.Ordinal);
        Assert.Contains("does not beat LRU on the loop", table, StringComparison.Ordinal);
    }

    [Fact]
    public void TheHostMmapWorkingSetKeepsItsStampsAndCleansUp()
    {
        var result = TraceBench.HostThroughput(64, 5_000);
        Assert.Equal(5_000, result.Accesses);
        Assert.True(result.Elapsed > TimeSpan.Zero);
        Assert.Contains("| host mmap | 5,000 |", TraceTable.Throughput([result], 64, 128), StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(Path.GetTempPath(), $"allocators-traces-{Environment.ProcessId}-*"));
    }

    [Fact]
    public void TheHostMmapReadsBackWhatItWrote()
    {
        using var host = new HostMmapWorkingSet(16);
        host.Touch(3, write: true);
        host.Touch(3, write: false);
        host.Touch(4, write: false);
        Assert.Equal(0, host.StampErrors);
        Assert.Equal(0, host.Verify());
    }

    /// <summary>An LRU under another name, standing in for the memory system's adapter.</summary>
    private sealed class Renamed(IPagedMemory inner, string name) : IPagedMemory
    {
        public string Name => name;

        public long MajorFaults => inner.MajorFaults;

        public void Touch(int page, bool write) => inner.Touch(page, write);
    }
}
