using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Misuse of the slab API: every bad free is rejected with a <see cref="MemoryCorruptionException"/> that names the
/// address in hex, and leaves the slab layer exactly as it was (slabinfo, buddyinfo and every cache's counters).
/// </summary>
public unsafe class SlabMisuseTests
{
    private sealed record Snapshot(string SlabInfo, string BuddyInfo, KmemCacheStats[] Stats, long ActiveKmalloc64)
    {
        public static Snapshot Take(MemorySystem sys) => new(
            sys.Slab.SlabInfo(),
            sys.Pages.BuddyInfo(),
            sys.Slab.Caches.Select(c => c.Stats).ToArray(),
            sys.Slab.KmallocCache(64)!.ActiveObjects);

        public void AssertUnchanged(MemorySystem sys)
        {
            Snapshot now = Take(sys);
            Assert.Equal(SlabInfo, now.SlabInfo);
            Assert.Equal(BuddyInfo, now.BuddyInfo);
            Assert.Equal(Stats, now.Stats);
            Assert.Equal(ActiveKmalloc64, now.ActiveKmalloc64);
        }
    }

    /// <summary>Runs a misuse, checks the exception names <paramref name="address"/> and that nothing changed.</summary>
    private static TException Rejected<TException>(MemorySystem sys, void* address, Action misuse) where TException : MemoryCorruptionException
    {
        var before = Snapshot.Take(sys);
        var ex = Assert.ThrowsAny<TException>(misuse);
        Assert.Contains(Hex(address), ex.Message);
        before.AssertUnchanged(sys);
        return ex;
    }

    [Fact]
    public void KfreeOfAStackAddressIsRejected()
    {
        using var sys = NewSystem();
        byte* stack = stackalloc byte[64];
        var ex = Rejected<MemoryCorruptionException>(sys, stack, () => sys.Slab.Kfree(stack));
        Assert.Equal((nuint)stack, ex.Address);
        Rejected<MemoryCorruptionException>(sys, stack, () => sys.Slab.Ksize(stack));
    }

    [Fact]
    public void KfreeOfNativeMemoryOutsideTheArenaIsRejected()
    {
        using var sys = NewSystem();
        void* native = NativeMemory.Alloc(128);
        try
        {
            var ex = Rejected<MemoryCorruptionException>(sys, native, () => sys.Slab.Kfree(native));
            Assert.Equal((nuint)native, ex.Address);
        }
        finally
        {
            NativeMemory.Free(native);
        }
    }

    [Fact]
    public void KfreeOfAPageFromThePageAllocatorIsRejected()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        PageFrame* page = sys.Pages.AllocPages(Gfp.Kernel, 0);
        PageFrame* compound = sys.Pages.AllocPages(Gfp.Kernel | Gfp.Comp, 2);
        byte* a = sys.Pages.PageAddress(page);
        byte* c = sys.Pages.PageAddress(compound);
        Rejected<MemoryCorruptionException>(sys, a, () => sys.Slab.Kfree(a));
        Rejected<MemoryCorruptionException>(sys, c, () => sys.Slab.Kfree(c));
        Rejected<MemoryCorruptionException>(sys, c + 8192, () => sys.Slab.Kfree(c + 8192));
        Rejected<MemoryCorruptionException>(sys, a, () => sys.Slab.KmallocCache(64)!.Free(a));
        Rejected<MemoryCorruptionException>(sys, a, () => sys.Slab.Ksize(a));
        sys.Pages.FreePages(page, 0);
        sys.Pages.FreePages(compound, 2);
        // A free page in the buddy lists is no kmalloc block either.
        Rejected<MemoryCorruptionException>(sys, a, () => sys.Slab.Kfree(a));
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(SlabFlags.None)]
    [InlineData(SlabFlags.Debug)]
    public void InteriorPointersAreRejected(SlabFlags flags)
    {
        using var sys = NewSystem(kmallocFlags: flags);
        string baseline = Baseline(sys);
        byte* p = (byte*)sys.Slab.Kmalloc(64);
        KmemCache cache = sys.Slab.CreateCache("interior-100", 100, 0, flags);
        byte* o = (byte*)cache.Alloc();
        foreach (int delta in new[] { 1, 8, 32, 63 })
        {
            Rejected<MemoryCorruptionException>(sys, p + delta, () => sys.Slab.Kfree(p + delta));
            Rejected<MemoryCorruptionException>(sys, o + delta, () => cache.Free(o + delta));
            Rejected<MemoryCorruptionException>(sys, o + delta, () => sys.Slab.Kfree(o + delta));
        }
        Rejected<MemoryCorruptionException>(sys, p - 8, () => sys.Slab.Kfree(p - 8));
        Rejected<MemoryCorruptionException>(sys, p + 16, () => sys.Slab.Krealloc(p + 16, 300));
        sys.Slab.Kfree(p);
        cache.Free(o);
        foreach (var c in sys.Slab.Caches) Assert.Empty(c.Reports);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void DoubleFreeOfTheTopOfTheMagazineIsRejected()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        void* p = sys.Slab.Kmalloc(64);
        sys.Slab.Kfree(p);
        var ex = Rejected<MemoryCorruptionException>(sys, p, () => sys.Slab.Kfree(p));
        Assert.Contains("double free", ex.Message);

        KmemCache cache = sys.Slab.CreateCache("df-top", 40);
        void* o = cache.Alloc();
        cache.Free(o);
        Rejected<MemoryCorruptionException>(sys, o, () => cache.Free(o));
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void DoubleFreeOfTheFreelistHeadIsRejected()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("df-head", 64);
        void* keep = cache.Alloc();
        void* p = cache.Alloc();
        Assert.Equal(SlabBase(sys, keep), SlabBase(sys, p));
        cache.Free(p);
        cache.Shrink(); // the magazine goes back to the slab: p, freed last, is now its slab's freelist head
        Assert.Equal(1, cache.ActiveObjects);

        var ex = Rejected<MemoryCorruptionException>(sys, p, () => cache.Free(p));
        Assert.Contains("double free", ex.Message);
        Rejected<MemoryCorruptionException>(sys, p, () => sys.Slab.Kfree(p));

        // Nothing was corrupted: the next two allocations are distinct objects.
        void* a = cache.Alloc();
        void* b = cache.Alloc();
        Assert.True(a != b);
        cache.Free(a);
        cache.Free(b);
        cache.Free(keep);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void EveryDoubleFreeIsRejectedWithDebugFlags()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("df-debug", 100, 0, SlabFlags.Debug);
        var objects = new nint[10];
        for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
        // Free in an order that buries each object somewhere in the freelist, then free each again.
        foreach (int i in new[] { 3, 7, 1, 9, 0 }) cache.Free((void*)objects[i]);
        foreach (int i in new[] { 3, 7, 1, 9, 0 })
        {
            var ex = Rejected<MemoryCorruptionException>(sys, (void*)objects[i], () => cache.Free((void*)objects[i]));
            Assert.Contains("double free", ex.Message);
        }

        void* k = sys.Slab.Kmalloc(100);
        void* k2 = sys.Slab.Kmalloc(100);
        sys.Slab.Kfree(k);
        sys.Slab.Kfree(k2);
        Rejected<MemoryCorruptionException>(sys, k, () => sys.Slab.Kfree(k));
        Rejected<MemoryCorruptionException>(sys, k2, () => sys.Slab.Kfree(k2));

        foreach (int i in new[] { 2, 4, 5, 6, 8 }) cache.Free((void*)objects[i]);
        foreach (var c in sys.Slab.Caches)
        {
            Assert.Empty(c.Validate());
            Assert.Empty(c.Reports);
        }
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void FreeToTheWrongCacheIsRejected()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache a = sys.Slab.CreateCache("cache-a", 64);
        KmemCache b = sys.Slab.CreateCache("cache-b", 64);
        void* p = a.Alloc();
        void* k = sys.Slab.Kmalloc(64);
        void* large = sys.Slab.Kmalloc(20000);
        var ex = Rejected<MemoryCorruptionException>(sys, p, () => b.Free(p));
        Assert.Contains("cache-a", ex.Message);
        Rejected<MemoryCorruptionException>(sys, k, () => b.Free(k));
        Rejected<MemoryCorruptionException>(sys, p, () => sys.Slab.KmallocCache(64)!.Free(p));
        Rejected<MemoryCorruptionException>(sys, large, () => b.Free(large));
        byte* stack = stackalloc byte[8];
        Rejected<MemoryCorruptionException>(sys, stack, () => b.Free(stack));

        a.Free(p);
        sys.Slab.Kfree(k);
        sys.Slab.Kfree(large);
        a.Destroy();
        b.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KfreeOfNullAndZeroSizePointerAreNoOps()
    {
        using var sys = NewSystem();
        Assert.True(SlabAllocator.ZeroSizePointer != null);
        Assert.True(sys.Slab.Kmalloc(0) == SlabAllocator.ZeroSizePointer);
        Assert.True(sys.Slab.Kzalloc(0) == SlabAllocator.ZeroSizePointer);
        Assert.True(sys.Slab.Kcalloc(0, 100) == SlabAllocator.ZeroSizePointer);
        var before = Snapshot.Take(sys);
        sys.Slab.Kfree(null);
        sys.Slab.Kfree(SlabAllocator.ZeroSizePointer);
        sys.Slab.KfreeBulk([0, (nint)SlabAllocator.ZeroSizePointer]);
        sys.Slab.KmallocCache(64)!.Free(null);
        sys.Slab.KmallocCache(64)!.FreeBulk([0, 0]);
        Assert.Equal((nuint)0, sys.Slab.Ksize(null));
        Assert.Equal((nuint)0, sys.Slab.Ksize(SlabAllocator.ZeroSizePointer));
        before.AssertUnchanged(sys);
    }

    [Fact]
    public void KcallocOverflowReturnsNullAndChangesNothing()
    {
        using var sys = NewSystem();
        var before = Snapshot.Take(sys);
        Assert.True(sys.Slab.Kcalloc(nuint.MaxValue / 2 + 1, 2) == null);
        Assert.True(sys.Slab.Kcalloc(2, nuint.MaxValue) == null);
        Assert.True(sys.Slab.Kcalloc((nuint)1 << 32, (nuint)1 << 32) == null);
        Assert.True(sys.Slab.Kmalloc((nuint)PageFrame.PageSize << (PageAllocator.MaxOrder + 1)) == null, "beyond the largest block");
        Assert.True(sys.Slab.Kmalloc(nuint.MaxValue) == null);
        before.AssertUnchanged(sys);
    }

    [Fact]
    public void LargeKmallocRoundTripAndItsMisuse()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        foreach (nuint size in new nuint[] { SlabAllocator.KmallocMaxCacheSize + 1, 40000, 65536, 4 << 20 })
        {
            byte* p = (byte*)sys.Slab.Kmalloc(size);
            Assert.True(p != null, $"kmalloc({size})");
            Assert.Equal((nuint)0, (nuint)p % PageFrame.PageSize);
            nuint usable = sys.Slab.Ksize(p);
            Assert.True(usable >= size);
            Stamp(p, (int)usable, size);
            foreach (var k in sys.Slab.KmallocCaches) Assert.False(k.Owns(p));
            Rejected<MemoryCorruptionException>(sys, p + 8, () => sys.Slab.Kfree(p + 8));
            Rejected<MemoryCorruptionException>(sys, p + 4096, () => sys.Slab.Kfree(p + 4096));
            Rejected<MemoryCorruptionException>(sys, p, () => sys.Slab.KmallocCache(64)!.Free(p));
            AssertStamp(p, (int)usable, size);
            sys.Slab.Kfree(p);
            var ex = Rejected<MemoryCorruptionException>(sys, p, () => sys.Slab.Kfree(p));
            Assert.Equal((nuint)p, ex.Address);
        }
        byte* z = (byte*)sys.Slab.Kzalloc(50000);
        AssertBytes(z, 50000, 0, "kzalloc of a large block");
        sys.Slab.Kfree(z);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KreallocOfAnInteriorLargePointerIsRejected()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        byte* p = (byte*)sys.Slab.Kmalloc(20000);
        Rejected<MemoryCorruptionException>(sys, p + 4096, () => sys.Slab.Krealloc(p + 4096, 100000));
        Rejected<MemoryCorruptionException>(sys, p + 4096, () => sys.Slab.Krealloc(p + 4096, 100));
        sys.Slab.Kfree(p);
        AssertBackToBaseline(sys, baseline);
    }
}
