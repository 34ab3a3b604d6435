using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Rcu;

/// <summary>SLAB_TYPESAFE_BY_RCU: an emptied slab's pages stay out of the page allocator until a grace period has passed.</summary>
public unsafe class TypesafeByRcuTests
{
    private static long FreePages(MemorySystem sys)
    {
        sys.Pages.DrainAllPages();
        return sys.Pages.NrFreePages;
    }

    private static (KmemCache Cache, List<nint> Objects) FillSlabs(MemorySystem sys, SlabFlags flags, int slabs)
    {
        KmemCache cache = sys.Slab.CreateCache("typesafe-test", 256, 0, flags);
        var objects = new List<nint>();
        for (int i = 0; i < cache.ObjectsPerSlab * slabs; i++)
        {
            var o = (long*)cache.Alloc();
            Assert.True(o != null);
            *o = 0x5eed_0000 + i;
            objects.Add((nint)o);
        }
        return (cache, objects);
    }

    [Fact]
    public void SlabPagesReturnOnlyAfterReadersLeave()
    {
        using var sys = NewSystem();
        var (cache, objects) = FillSlabs(sys, SlabFlags.TypesafeByRcu, slabs: 4);
        using var inside = new ManualResetEventSlim();
        using var leave = new ManualResetEventSlim();
        long seen = 0;
        var reader = new Thread(() =>
        {
            sys.Rcu.RcuReadLock();
            inside.Set();
            leave.Wait();
            seen = *(long*)objects[0]; // type-safe: still memory of this cache, not reused by the page allocator
            sys.Rcu.RcuReadUnlock();
        });
        reader.Start();
        inside.Wait();

        long before = FreePages(sys);
        long slabsFreedBefore = cache.Stats.SlabsFreed;
        foreach (nint o in objects) cache.Free((void*)o);
        cache.Shrink();
        Assert.True(cache.Stats.SlabsFreed > slabsFreedBefore, "shrink discarded no slab");
        Thread.Sleep(30); // give a broken implementation every chance to free early
        Assert.Equal(before, FreePages(sys));

        leave.Set();
        reader.Join();
        Assert.Equal(0x5eed_0000, seen);
        sys.Rcu.RcuBarrier();
        long slabPages = (cache.Stats.SlabsFreed - slabsFreedBefore) << cache.Order;
        Assert.Equal(before + slabPages, FreePages(sys));
        cache.Destroy();
    }

    [Fact]
    public void WithoutTheFlagSlabPagesReturnAtOnce()
    {
        using var sys = NewSystem();
        var (cache, objects) = FillSlabs(sys, SlabFlags.None, slabs: 4);
        sys.Rcu.RcuReadLock();
        try
        {
            long before = FreePages(sys);
            foreach (nint o in objects) cache.Free((void*)o);
            cache.Shrink();
            Assert.True(FreePages(sys) > before);
        }
        finally
        {
            sys.Rcu.RcuReadUnlock();
        }
        cache.Destroy();
    }

    [Fact]
    public void DestroyWaitsForDeferredSlabs()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var (cache, objects) = FillSlabs(sys, SlabFlags.TypesafeByRcu, slabs: 3);
        foreach (nint o in objects) cache.Free((void*)o);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }
}
