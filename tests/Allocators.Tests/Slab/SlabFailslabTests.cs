using Allocators.PageAlloc;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Fault injection (failslab) and allocation failure: the unsafe API returns null, Panic caches and the typed API throw
/// <see cref="OutOfMemoryException"/>, TryAlloc returns null, bulk allocation is all or nothing, and nothing leaks.
/// </summary>
public unsafe class SlabFailslabTests
{
    public struct Payload
    {
        public long A, B, C;
    }

    [Fact]
    public void ExactlyTimesKmallocsFailThenTheySucceed()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache k64 = sys.Slab.KmallocCache(64)!;
        // Warm the fast path first: failslab must still see every call.
        sys.Slab.Kfree(sys.Slab.Kmalloc(64));
        long failuresBefore = k64.Stats.AllocFailures;

        sys.Slab.Failslab.Probability = 100;
        sys.Slab.Failslab.Times = 2;
        Assert.True(sys.Slab.Kmalloc(64) == null);
        Assert.True(sys.Slab.Kzalloc(50) == null);
        var ok = new List<nint>();
        for (int i = 0; i < 10; i++)
        {
            void* p = sys.Slab.Kmalloc(64);
            Assert.True(p != null, $"allocation {i} after the two injected failures");
            ok.Add((nint)p);
        }
        Assert.Equal(2, sys.Slab.Failslab.Injected);
        Assert.Equal(failuresBefore + 2, k64.Stats.AllocFailures);
        sys.Slab.KfreeBulk(ok.ToArray());
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void FailNthFailsTheNthSlabAllocationThenTheFastPathComesBack()
    {
        using var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        sys.Slab.Kfree(sys.Slab.Kmalloc(64)); // warm the fast path: fail-nth must still count every call
        sys.Slab.Failslab.FailNth = 2;
        void* a = sys.Slab.Kmalloc(64);
        void* b = sys.Slab.Kmalloc(64);
        void* c = sys.Slab.Kmalloc(64);
        Assert.True(a != null && b == null && c != null);
        Assert.Equal(0, sys.Slab.Failslab.FailNth);
        Assert.Equal(1, sys.Slab.Failslab.Injected);
        long slow = sys.Slab.KmallocCache(64)!.Stats.AllocSlowPath;
        for (int i = 0; i < 10; i++) sys.Slab.Kfree(sys.Slab.Kmalloc(64));
        Assert.Equal(slow, sys.Slab.KmallocCache(64)!.Stats.AllocSlowPath);
        sys.Slab.Kfree(a);
        sys.Slab.Kfree(c);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void CacheAllocFailsAndNoFailIsExempt()
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("failing-200", 200);
        sys.Slab.Failslab.Probability = 100;
        Assert.True(cache.Alloc() == null);
        Assert.True(cache.AllocNode(Gfp.Kernel, 0) == null);
        Assert.True(sys.Slab.KmallocNode(100, Gfp.Kernel, 0) == null);
        void* p = cache.Alloc(Gfp.Kernel | Gfp.NoFail);
        Assert.True(p != null, "__GFP_NOFAIL is never failed on purpose");
        sys.Slab.Failslab.Probability = 0;
        Assert.True(cache.ActiveObjects >= 1, "the NoFail object is live");
        cache.Free(p);
        void* q = cache.Alloc();
        Assert.True(q != null);
        cache.Free(q);
        cache.Destroy();
    }

    [Fact]
    public void PanicCacheThrowsOutOfMemory()
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("panic-64", 64, 0, SlabFlags.Panic);
        sys.Slab.Failslab.Probability = 100;
        sys.Slab.Failslab.Times = 1;
        var ex = Assert.Throws<OutOfMemoryException>(() => cache.Alloc());
        Assert.Contains("panic-64", ex.Message);
        void* p = cache.Alloc();
        Assert.True(p != null);
        cache.Free(p);
        Assert.Equal(1, cache.Stats.AllocFailures);
    }

    [Fact]
    public void PanicCacheThrowsWhenThePageAllocatorFails()
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("panic-pages", 512, 0, SlabFlags.Panic);
        KmemCache plain = sys.Slab.CreateCache("plain-pages", 512);
        sys.Pages.FaultInjection.Probability = 100;
        sys.Pages.FaultInjection.Times = 2;
        Assert.Throws<OutOfMemoryException>(() => cache.Alloc());
        Assert.True(plain.Alloc() == null, "a cache without Panic returns null when no slab can be had");
        void* p = cache.Alloc();
        void* q = plain.Alloc();
        Assert.True(p != null && q != null);
        cache.Free(p);
        plain.Free(q);
    }

    [Fact]
    public void TypedCacheThrowsAndTryAllocReturnsNull()
    {
        using var sys = NewSystem();
        KmemCache<Payload> cache = sys.Slab.CreateCache<Payload>("payload");
        sys.Slab.Failslab.Probability = 100;
        sys.Slab.Failslab.Times = 3;
        Assert.Throws<OutOfMemoryException>(() => cache.Alloc());
        Assert.True(cache.TryAlloc() == null);
        Assert.Throws<OutOfMemoryException>(() => cache.AllocRef());
        Payload* p = cache.Alloc();
        Payload* q = cache.TryAlloc();
        Assert.True(p != null && q != null);
        cache.Free(p);
        cache.Free(q);
        Assert.Equal(3, cache.Cache.Stats.AllocFailures);
    }

    [Fact]
    public void BulkAllocationIsAllOrNothing()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("bulk-96", 96);
        sys.Slab.Failslab.Probability = 100;
        sys.Slab.Failslab.Interval = 5;
        sys.Slab.Failslab.Times = 1;
        Span<nint> objects = stackalloc nint[10];
        Assert.Equal(0, cache.AllocBulk(Gfp.Kernel, objects));
        foreach (nint p in objects) Assert.Equal(0, p);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);

        Assert.Equal(10, cache.AllocBulk(Gfp.Kernel, objects));
        Assert.Equal(10, objects.ToArray().Distinct().Count());
        foreach (nint p in objects) Assert.True(cache.Owns((void*)p));
        cache.FreeBulk(objects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void FailedKreallocLeavesTheOldBlockIntact()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        Stamp(p, 100, 42);
        sys.Slab.Failslab.Probability = 100;
        sys.Slab.Failslab.Times = 1;
        Assert.True(sys.Slab.Krealloc(p, 1000) == null);
        AssertStamp(p, 100, 42);
        Assert.True(sys.Slab.KmallocCache(128)!.Owns(p));
        byte* q = (byte*)sys.Slab.Krealloc(p, 1000);
        Assert.True(q != null && q != p);
        AssertStamp(q, 100, 42);
        sys.Slab.Kfree(q);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void RealOutOfMemoryReturnsNullAndEverythingComesBack()
    {
        using var sys = NewUncheckedSystem(32);
        string baseline = Baseline(sys);
        KmemCache panic = sys.Slab.CreateCache("panic-2k", 2048, 0, SlabFlags.Panic);
        KmemCache<Payload> typed = sys.Slab.CreateCache<Payload>("typed-oom");
        var blocks = new List<nint>();
        while (true)
        {
            void* p = sys.Slab.Kmalloc(4096, Gfp.Kernel | Gfp.NoWarn);
            if (p == null) break;
            blocks.Add((nint)p);
            Assert.True(blocks.Count < 10_000, "a 32 MiB arena cannot hold this many 4 KiB objects");
        }
        // Most of low memory (all of it without ALLOCATORS_HIGHMEM's split; slabs may not use HighMem).
        long lowPages = sys.Pages.Zones.Where(z => z.Type != ZoneType.HighMem).Sum(z => z.ManagedPages);
        Assert.True(blocks.Count > lowPages * 4000 / 8192, $"only {blocks.Count} blocks of {lowPages} low pages before running out");
        Assert.True(sys.Slab.KmallocCache(4096)!.Stats.AllocFailures >= 1);

        // Use up what is left in small objects, then the Panic cache and the typed cache must throw.
        while (sys.Slab.Kmalloc(64, Gfp.Kernel | Gfp.NoWarn) is var q && q != null) blocks.Add((nint)q);
        Assert.Throws<OutOfMemoryException>(() => panic.Alloc(Gfp.Kernel | Gfp.NoWarn));
        while (typed.TryAlloc(Gfp.Kernel | Gfp.NoWarn) is var t && t != null) blocks.Add((nint)t);
        Assert.Throws<OutOfMemoryException>(() => typed.Alloc(Gfp.Kernel | Gfp.NoWarn));

        foreach (nint b in blocks)
        {
            if (typed.Cache.Owns((void*)b)) typed.Free((Payload*)b); else sys.Slab.Kfree((void*)b);
        }
        panic.Destroy();
        typed.Dispose();
        AssertBackToBaseline(sys, baseline);
    }
}
