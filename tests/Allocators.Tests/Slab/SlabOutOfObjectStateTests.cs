using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// A non-debug cache keeps no metadata in its objects (their state is bits beside the slab's frame): whatever a stray
/// write leaves in a free object cannot mislead the allocator, and the allocator never writes into an object's memory.
/// </summary>
public unsafe class SlabOutOfObjectStateTests
{
    public enum Scribble { PointerToLiveObject, StackPointer, AllOnes, Zeroed, PointerToItself }

    private static void Fill(byte* p, int size, Scribble how, nint live, void* stack)
    {
        for (int i = 0; i + 8 <= size; i += 8)
        {
            ulong* w = (ulong*)(p + i);
            *w = how switch
            {
                Scribble.PointerToLiveObject => (ulong)live,
                Scribble.StackPointer => (ulong)stack,
                Scribble.AllOnes => ulong.MaxValue,
                Scribble.Zeroed => 0,
                _ => (ulong)p,
            };
        }
    }

    [Theory]
    [InlineData(Scribble.PointerToLiveObject)]
    [InlineData(Scribble.StackPointer)]
    [InlineData(Scribble.AllOnes)]
    [InlineData(Scribble.Zeroed)]
    [InlineData(Scribble.PointerToItself)]
    public void StrayWritesIntoFreeObjectsCannotMisleadTheAllocator(Scribble how)
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("scribbled-64", 64);
        Assert.Equal(SlabFlags.None, cache.Flags);
        int n = cache.ObjectsPerSlab * 3;
        var all = new List<nint>();
        for (int i = 0; i < n; i++) all.Add((nint)cache.Alloc());
        var live = new HashSet<nint>();
        var freed = new HashSet<nint>();
        for (int i = 0; i < n; i++) (i % 2 == 0 ? freed : live).Add(all[i]);
        foreach (nint p in freed) cache.Free((void*)p);
        cache.Shrink();
        byte* stack = stackalloc byte[64];
        foreach (nint p in freed) Fill((byte*)p, 64, how, live.First(), stack);
        foreach (nint p in live) Stamp((byte*)p, 64, (ulong)p);

        // Every allocation is a distinct object of the cache that was free; the freed ones all come back first.
        var got = new HashSet<nint>();
        for (int i = 0; i < freed.Count; i++)
        {
            nint p = (nint)cache.Alloc();
            Assert.True(cache.Owns((void*)p), $"0x{p:x} is not an object of the cache");
            Assert.True(got.Add(p), $"0x{p:x} handed out twice");
            Assert.DoesNotContain(p, live);
        }
        Assert.Equal(freed, got);
        foreach (nint p in live) AssertStamp((byte*)p, 64, (ulong)p);
        Assert.Empty(cache.Reports);
        Assert.Empty(cache.Validate());

        foreach (nint p in got.Concat(live)) cache.Free((void*)p);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Equal(0, cache.Stats.Slabs);
    }

    [Fact]
    public void TheAllocatorNeverWritesIntoAnObject()
    {
        using var sys = NewUncheckedSystem();
        KmemCache cache = sys.Slab.CreateCache("untouched-32", 32);
        var objects = new List<nint>();
        for (int i = 0; i < cache.ObjectsPerSlab * 4; i++)
        {
            byte* p = (byte*)cache.Alloc();
            Stamp(p, 32, (ulong)i + 1);
            objects.Add((nint)p);
        }
        // Free every third object, churn the rest of the cache, take the freed ones back: each still holds its stamp
        // (free, reused and live objects alike are never written by the allocator).
        var freed = new Dictionary<nint, ulong>();
        for (int i = 0; i < objects.Count; i += 3)
        {
            cache.Free((void*)objects[i]);
            freed[objects[i]] = (ulong)i + 1;
        }
        var churn = new List<nint>();
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < freed.Count; i++) churn.Add((nint)cache.Alloc());
            foreach (nint p in churn) cache.Free((void*)p);
            churn.Clear();
        }
        for (int i = 0; i < objects.Count; i++)
        {
            if (!freed.ContainsKey(objects[i])) AssertStamp((byte*)objects[i], 32, (ulong)i + 1);
        }
        for (int i = 0; i < freed.Count; i++)
        {
            nint p = (nint)cache.Alloc();
            Assert.True(freed.TryGetValue(p, out ulong stamp), $"0x{p:x} was not free");
            AssertStamp((byte*)p, 32, stamp);
        }
        foreach (nint p in objects) cache.Free((void*)p);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
    }
}

/// <summary>
/// Slabs of at most 64 objects keep both bitmaps in their head frame (so a free touches one line of metadata): the
/// frame's reference count is the slab's, and the page goes back to the page allocator with its count restored.
/// </summary>
public unsafe class SlabInFrameBitmapTests
{
    [Fact]
    public void SmallSlabsKeepTheirBitmapsInTheFrameAndGiveThePageBackIntact()
    {
        using var sys = NewUncheckedSystem();
        string boot = sys.Pages.BuddyInfo();
        KmemCache small = sys.Slab.CreateCache("in-frame-64", 64);
        KmemCache many = sys.Slab.CreateCache("in-ext-16", 16);
        Assert.Equal(1, small.Data->BitmapInFrame);
        Assert.Equal(0, many.Data->BitmapInFrame);

        var objects = new List<nint>();
        for (int i = 0; i < small.ObjectsPerSlab; i++) objects.Add((nint)small.Alloc());
        Allocators.Physical.PageFrame* frame = sys.Pages.VirtToPage((void*)objects[0]);
        Assert.Equal(1, sys.Pages.PageRefCount(frame));
        var e = Assert.Throws<Allocators.Common.BadPageException>(() => sys.Pages.GetPage(frame));
        Assert.Contains("belongs to the slab allocator", e.Message);
        Assert.Throws<Allocators.Common.BadPageException>(() => sys.Pages.PutPage(frame));

        foreach (nint p in objects) small.Free((void*)p);
        void* o = many.Alloc();
        many.Free(o);
        sys.Slab.ShrinkAll();
        Assert.Equal(0, small.Stats.Slabs);
        Assert.Equal(0, many.Stats.Slabs);
        small.Dispose();
        many.Dispose();
        sys.Pages.DrainAllPages();
        Assert.Equal(boot, sys.Pages.BuddyInfo());
    }
}
