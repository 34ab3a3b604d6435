using Allocators.Cli.Bench;
using Allocators.Workloads;
using Allocators.Physical;

using Allocators.Peers;

namespace Allocators.Tests.Bench;

/// <summary>Every bench workload at a tiny size on Allocators and glibc: it completes and its own accounting balances.</summary>
public sealed class WorkloadTests
{
    private static readonly AllocatorUnderTest Kmalloc = AllocatorUnderTest.All.Single(a => a.Name == "allocators");
    private static readonly AllocatorUnderTest TypedCache = AllocatorUnderTest.All.Single(a => a.Name == "allocators-cache");
    private static readonly AllocatorUnderTest Glibc = AllocatorUnderTest.All.Single(a => a.Name == "glibc");

    public static TheoryData<string, string> Pairs()
    {
        var data = new TheoryData<string, string>();
        foreach (var w in WorkloadCatalog.All)
        {
            data.Add(w.Name, "allocators");
            data.Add(w.Name, "allocators-handle");
            data.Add(w.Name, "glibc");
            if (w.HasTypedCache)
            {
                data.Add(w.Name, "allocators-cache");
                data.Add(w.Name, "allocators-cache-handle");
            }
        }
        data.Add("larson", "allocators-fine");
        return data;
    }

    [Fact]
    public void TheFineClassVariantRunsOnlyWhenNamedAndTheHandleRowsOnlyInFull()
    {
        Assert.Contains(AllocatorUnderTest.All, a => a.Name == "allocators-fine");
        string[] handleRows = ["allocators-handle", "allocators-cache-handle"];
        var quick = AllocatorUnderTest.DefaultSet(BenchScale.Quick).Select(a => a.Name).ToList();
        var full = AllocatorUnderTest.DefaultSet(BenchScale.Full).Select(a => a.Name).ToList();
        Assert.DoesNotContain("allocators-fine", quick);
        Assert.DoesNotContain("allocators-fine", full);
        Assert.All(handleRows, r => Assert.DoesNotContain(r, quick));
        Assert.All(handleRows, r => Assert.Contains(r, full));
        Assert.Contains("allocators", quick);
        Assert.Contains("allocators-cache", quick);
        Assert.Equal(AllocatorUnderTest.All.Count - 3, quick.Count);
        Assert.Equal(AllocatorUnderTest.All.Count - 1, full.Count);
        Assert.All(handleRows, r => Assert.StartsWith("extra", AllocatorUnderTest.All.Single(a => a.Name == r).Description, StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void WorkloadCompletesWithBalancedAccounting(string workloadName, string allocatorName)
    {
        var workload = WorkloadCatalog.Find(workloadName)!;
        var allocator = AllocatorUnderTest.All.Single(a => a.Name == allocatorName);
        var runner = new BenchRunner(new BenchPlan([workload], [allocator], [2], BenchScale.Tiny));

        BenchResult result = runner.RunOnce(workload, allocator, 2, BenchScale.Tiny);

        Assert.True(result.Verified, result.Detail);
        Assert.True(result.Operations > 0);
        Assert.True(result.Elapsed > TimeSpan.Zero);
        if (!allocatorName.StartsWith("allocators", StringComparison.Ordinal)) Assert.Null(result.PeakFootprintBytes);
        // These fill their slots first and hold them for the whole run, so the 2 ms sampler must have seen them (the others
        // may be too quick at this size on a loaded machine).
        if (workloadName is "larson" or "alloc-test")
        {
            Assert.True(result.PeakLiveBytes > 0, "the workload's live bytes were never seen above zero");
            if (allocatorName == "allocators")
                Assert.True(result.PeakFootprintBytes >= result.PeakLiveBytes / 2, $"footprint {result.PeakFootprintBytes} vs live {result.PeakLiveBytes}");
        }
    }

    [Fact]
    public void LarsonLeavesNoLiveBytesAndNoObjectsBehind()
    {
        // Run larson directly on a memory system so the test can look at the caches afterwards.
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20 } });
        var context = new RunContext(2, BenchScale.Tiny);
        var outcome = new Larson().Run<KmallocAllocator, nint>(new KmallocAllocator(system.Slab), context);

        Assert.True(outcome.Verified, outcome.Detail);
        Assert.Equal(0, context.Live.Sum());
        Assert.True(outcome.Operations > 0);
        system.Slab.ShrinkAll();
        Assert.Equal(0, system.Slab.Caches.Sum(c => c.ActiveObjects));
    }

    [Fact]
    public void XmallocTestFreesEveryBlockOnTheConsumerSide()
    {
        var context = new RunContext(2, BenchScale.Tiny);
        var outcome = new XmallocTest().Run<NativeLibraryAllocator, nint>(new NativeLibraryAllocator(Allocators.Peers.NativeAllocators.Glibc), context);
        Assert.True(outcome.Verified, outcome.Detail);
        Assert.Equal(0, context.Live.Sum());
        Assert.True(outcome.Operations > 0);
        Assert.Equal(0, outcome.Operations % XmallocTest.ObjectsPerBatch);
    }

    [Fact]
    public void ManagedAllocatorsRunTheByteArrayWorkloads()
    {
        var gc = AllocatorUnderTest.All.Single(a => a.Name == "GC");
        var pool = AllocatorUnderTest.All.Single(a => a.Name == "ArrayPool");
        var runner = new BenchRunner(new BenchPlan(WorkloadCatalog.All, [gc, pool], [1], BenchScale.Tiny));
        foreach (var w in WorkloadCatalog.All)
        {
            Assert.True(runner.RunOnce(w, gc, 1, BenchScale.Tiny).Verified, $"{w.Name} on GC");
            if (pool.Supports(w)) Assert.True(runner.RunOnce(w, pool, 1, BenchScale.Tiny).Verified, $"{w.Name} on ArrayPool");
        }
        Assert.False(pool.Supports(WorkloadCatalog.Find("binary-trees")!));
    }

    [Fact]
    public void TypedCacheOnlyForSingleSizeWorkloads()
    {
        var single = WorkloadCatalog.All.Where(w => w.HasTypedCache).Select(w => w.Name).Order().ToArray();
        Assert.Equal(["binary-trees", "cache-scratch", "cache-thrash", "xmalloc-test"], single);
        Assert.False(TypedCache.Supports(WorkloadCatalog.Find("larson")!));
        Assert.True(Kmalloc.Supports(WorkloadCatalog.Find("larson")!));
        Assert.True(Glibc.IsAvailable, Glibc.Status);
    }

    [Fact]
    public void DefaultThreadCountsDoubleUpToTheCoresThenOversubscribe()
    {
        Assert.Equal([1, 2, 4], BenchPlan.DefaultThreadCounts(2));
        Assert.Equal([1, 2, 4, 8, 16], BenchPlan.DefaultThreadCounts(8));
        Assert.Equal([1, 2, 4, 6, 12], BenchPlan.DefaultThreadCounts(6));
        Assert.Equal([1, 2], BenchPlan.DefaultThreadCounts(1));
    }
}
