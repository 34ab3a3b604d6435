using Allocators.Mmu;

namespace Allocators.Tests.Reclaim;

/// <summary>The OOM killer: when reclaim cannot make room, the process with the highest badness goes.</summary>
public sealed class OomTests
{
    private const int PageSize = 4096;
    private const MapFlags PrivateAnon = MapFlags.Private | MapFlags.Anonymous;

    private static ulong Fill(AddressSpace mm, int pages)
    {
        ulong a = mm.Mmap(0, (ulong)pages * PageSize, MemoryProtection.ReadWrite, PrivateAnon);
        for (int i = 0; i < pages; i++) mm.Write<long>(a + (ulong)i * PageSize, i);
        return a;
    }

    [Fact]
    public void TheBiggestProcessIsKilledAndTheAllocationGoesOn()
    {
        // 16 MiB of memory and 4 MiB of swap: processes of 10 MiB and 2 MiB fit, a third of 8 MiB does not.
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 4L << 20);
        using var big = f.NewProcess();
        using var small = f.NewProcess();
        using var grower = f.NewProcess();
        ulong bigAt = Fill(big, 2560);
        ulong smallAt = Fill(small, 512);
        Fill(grower, 2048);

        Assert.True(big.IsOomKilled);
        Assert.False(small.IsOomKilled);
        Assert.False(grower.IsOomKilled);
        Assert.Equal(1, f.Counters.OomKills);
        Assert.Contains(f.Kernel.Log, line => line.StartsWith($"Out of memory: Killed process {big.Pid} (", StringComparison.Ordinal)
            && line.Contains("anon-rss:") && line.Contains("oom_score_adj:0"));
        var killed = Assert.Throws<ProcessKilledException>(() => big.Read<long>(bigAt));
        Assert.Equal(big.Pid, killed.Pid);
        Assert.Equal(0, big.Statistics.RssAnon);
        Assert.Equal(0, big.SwapEntries);
        for (int i = 0; i < 512; i++) Assert.Equal(i, small.Read<long>(smallAt + (ulong)i * PageSize));
    }

    [Fact]
    public void WithoutSwapOrAPageCacheTheOomKillerStillRuns()
    {
        // Nothing can be reclaimed: the kernel still kills the biggest process rather than fail the fault.
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new Allocators.Physical.PhysicalMemoryOptions { Size = 16L << 20 },
            PageAllocator = new Allocators.PageAlloc.PageAllocatorOptions { AutoGrow = false, ReleaseFreeMemory = false },
        });
        using var big = system.CreateAddressSpace();
        using var grower = system.CreateAddressSpace();
        ulong bigAt = Fill(big, 2560);
        Assert.Null(system.Pages.Reclaimer);
        ulong growerAt = Fill(grower, 1536);

        Assert.True(big.IsOomKilled);
        Assert.False(grower.IsOomKilled);
        Assert.Equal(1, system.Pages.ReclaimCounters.OomKills);
        Assert.Contains(system.Kernel.Log, line => line.StartsWith($"Out of memory: Killed process {big.Pid} (", StringComparison.Ordinal));
        Assert.Throws<ProcessKilledException>(() => big.Read<long>(bigAt));
        for (int i = 0; i < 1536; i++) Assert.Equal(i, grower.Read<long>(growerAt + (ulong)i * PageSize));
        Assert.False(system.HasPageCache);
    }

    [Fact]
    public void OomScoreAdjChoosesTheVictim()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 4L << 20);
        using var big = f.NewProcess();
        using var small = f.NewProcess();
        using var grower = f.NewProcess();
        big.OomScoreAdj = -1000; // never
        small.OomScoreAdj = 1000;
        Fill(big, 2560);
        Fill(small, 512);
        Fill(grower, 2048);
        Assert.False(big.IsOomKilled);
        Assert.True(small.IsOomKilled);
        Assert.Throws<ArgumentOutOfRangeException>(() => big.OomScoreAdj = 1001);
    }
}
