using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// In caches whose objects share cache lines, every thread cache has a small owner id: the depot hands a parked
/// magazine only to the thread it is for, refills prefer slabs that are nobody's or the thread's own, and a thread
/// that adopts an ended thread's cache, or starts after one was retired, takes over its id (and with it the slabs
/// marked with it; the ended thread's parked magazines become anyone's then).
/// </summary>
public unsafe class SlabOwnershipTests
{
    private static T OnThread<T>(Func<T> body)
    {
        T result = default!;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { result = body(); }
            catch (Exception e) { error = e; }
        });
        t.Start();
        t.Join();
        if (error != null) throw new Xunit.Sdk.XunitException($"thread failed: {error}");
        return result;
    }

    [Fact]
    public void ParkedMagazinesGoBackOnlyToTheThreadThatParkedThem()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("owned-16", 16);
        KmemCacheData* d = cache.Data;
        int n = d->MagazineCapacity * (2 + d->MaxStash + 10); // ten magazines beyond this thread's own go to the depot
        Assert.True(d->MaxFull >= 10);
        var mine = new nint[n];
        for (int i = 0; i < n; i++) mine[i] = (nint)cache.Alloc();
        foreach (nint p in mine) cache.Free((void*)p);

        var set = new HashSet<nint>(mine);
        var theirs = OnThread(() =>
        {
            var got = new nint[n];
            for (int i = 0; i < n; i++) got[i] = (nint)cache.Alloc();
            foreach (nint p in got) cache.Free((void*)p);
            return got;
        });
        Assert.DoesNotContain(theirs, set.Contains); // none of this thread's parked objects went to the other thread
        long slabs = cache.Stats.SlabsAllocated;
        var again = new nint[n];
        for (int i = 0; i < n; i++) again[i] = (nint)cache.Alloc();
        Assert.True(again.All(set.Contains), "this thread got its own objects back");
        Assert.Equal(slabs, cache.Stats.SlabsAllocated);
        foreach (nint p in again) cache.Free((void*)p);
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void AnEndedThreadsParkedMagazinesBecomeAnyones()
    {
        using var sys = NewSystem();
        var cache = sys.Slab.CreateCache("orphans-16", 16);
        KmemCacheData* d = cache.Data;
        int n = d->MagazineCapacity * (2 + d->MaxStash + 4); // four magazines parked for the thread in the depot
        cache.Free(cache.Alloc());                           // this thread has its own id from here on
        var freedThere = OnThread(() =>
        {
            var got = new nint[n];
            for (int i = 0; i < n; i++) got[i] = (nint)cache.Alloc();
            foreach (nint p in got) cache.Free((void*)p);
            return new HashSet<nint>(got);
        });
        // Its finalizer retires the ended thread's cache (no thread registers in between to take it over): its parked
        // magazines go to anyone.
        for (int i = 0; i < 2; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        long slabs = cache.Stats.SlabsAllocated;
        long exchanges = cache.Stats.DepotExchanges;
        var here = new List<nint>();
        for (int i = 0; i < 4 * d->MagazineCapacity; i++) here.Add((nint)cache.Alloc());
        Assert.True(here.Count(freedThere.Contains) >= 3 * d->MagazineCapacity, "the ended thread's parked objects were reused");
        Assert.True(cache.Stats.DepotExchanges >= exchanges + 3, "they came as the parked magazines, from the depot");
        Assert.Equal(slabs, cache.Stats.SlabsAllocated);
        foreach (nint p in here) cache.Free((void*)p);
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
    }

    [Fact]
    public void AThreadStartedAfterAnotherEndedTakesOverItsOwnerId()
    {
        using var sys = NewSystem();
        var cache = sys.Slab.CreateCache("adopt-24", 24);
        var lines = sys.Slab.CreateCache("lines-64", 64);
        int first = OnThread(() => cache.ThisThreadMagazines()->OwnerId);
        Assert.True(first > 0);
        int live = cache.ThisThreadMagazines()->OwnerId;  // this thread registers while the first one is gone
        Assert.Equal(first, live);
        int next = OnThread(() => cache.ThisThreadMagazines()->OwnerId);
        Assert.NotEqual(live, next);                       // ids are unique among live thread caches
        Assert.Equal(0, lines.ThisThreadMagazines()->OwnerId); // slots of whole lines track no owner
    }

    [Fact]
    public void RefillsPreferSlabsThatAreNobodysOrTheirOwn()
    {
        using var sys = NewSystem();
        var cache = sys.Slab.CreateCache("prefer-32", 32);
        int perSlab = cache.ObjectsPerSlab;
        var held = new List<nint>();
        using var ready = new ManualResetEventSlim();
        using var done = new ManualResetEventSlim();
        // Another thread, alive throughout, takes two slabs' objects and gives back every other one: two partial
        // slabs it owns, with holes between the objects it still uses.
        var other = new Thread(() =>
        {
            var all = new List<nint>();
            for (int i = 0; i < 2 * perSlab; i++) all.Add((nint)cache.Alloc());
            for (int i = 0; i < all.Count; i++)
            {
                if (i % 2 == 0) held.Add(all[i]);
                else cache.Free((void*)all[i]);
            }
            ready.Set();
            done.Wait();
            foreach (nint p in held) cache.Free((void*)p);
        });
        other.Start();
        ready.Wait();
        sys.Slab.ShrinkAll(); // the other thread's magazines go back to those slabs, which stay partial and its own
        var heldLines = new HashSet<nint>(held.Select(p => p & ~63));
        var mine = new List<nint>();
        for (int i = 0; i < perSlab; i++) mine.Add((nint)cache.Alloc());
        Assert.DoesNotContain(mine, p => heldLines.Contains(p & ~63)); // a slab of its own, not the holes
        foreach (nint p in mine) cache.Free((void*)p);
        done.Set();
        other.Join();
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
    }
}

/// <summary>Refills detach a slab's whole free list and walk it outside the node lock; what the magazine cannot take goes back.</summary>
public unsafe class SlabDetachedRefillTests
{
    [Fact]
    public void ASlabWithMoreFreeObjectsThanAMagazineKeepsTheRest()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("split-8", 8);
        KmemCacheData* d = cache.Data;
        Assert.True(cache.ObjectsPerSlab > d->MagazineCapacity);
        void* first = cache.Alloc();
        // One slab; the magazine took its capacity and the rest went back on the slab's free list.
        Assert.Equal(1, cache.Stats.Slabs);
        Assert.Equal(d->MagazineCapacity, cache.ActiveObjects);
        Assert.Equal(1, cache.Stats.PartialSlabs);
        Assert.Empty(cache.Validate());

        // Every object of the slab comes out exactly once, in magazine-sized pieces.
        var all = new HashSet<nint> { (nint)first };
        for (int i = 1; i < cache.ObjectsPerSlab; i++) Assert.True(all.Add((nint)cache.Alloc()));
        Assert.Equal(1, cache.Stats.Slabs);
        Assert.Equal(0, cache.Stats.PartialSlabs);
        Assert.Empty(cache.Validate());
        foreach (nint p in all) cache.Free((void*)p);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void RunsOfOneSlabGoBackNewestFirst()
    {
        using var sys = NewSystem();
        var cache = sys.Slab.CreateCache("runs-32", 32);
        var objects = new nint[cache.ObjectsPerSlab];
        for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
        foreach (nint p in objects.Skip(1)) cache.Free((void*)p); // the first stays: the slab stays
        cache.Shrink(); // one run: all but one object back in one splice
        Assert.Empty(cache.Validate());
        Assert.Equal(1, cache.ActiveObjects);
        // The last object freed heads the slab's free list, as if they had been pushed one by one.
        var slab = KmemCache.SlabOf(sys.Pages.Memory, (void*)objects[0]);
        Assert.Equal(objects[^1], (nint)SlabPage.Freelist(slab));
        cache.Free((void*)objects[0]);
    }
}
