using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Frees of objects whose slab another thread took objects from last ("remote" frees) are not reused by the freeing
/// thread, which would write into cache lines the other thread is using (passive false sharing, what cache-scratch
/// measures); they collect in a remote magazine that goes to the depot, where the allocating thread picks them up.
/// </summary>
public unsafe class SlabRemoteFreeTests
{
    private static void OnThread(Action body)
    {
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { error = e; }
        });
        t.Start();
        t.Join();
        if (error != null) throw new Xunit.Sdk.XunitException($"thread failed: {error}");
    }

    [Fact]
    public void AnObjectFreedByAnotherThreadIsNotHandedBackToThatThread()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("remote-8", 8);
        nint fromMain = (nint)cache.Alloc();      // main's magazine refilled from the slab: main owns it now
        var neighbours = new List<nint>();
        for (int i = 0; i < 7; i++) neighbours.Add((nint)cache.Alloc());

        var reused = new List<nint>();
        OnThread(() =>
        {
            cache.Free((void*)fromMain);           // remote: goes to this thread's remote magazine
            for (int i = 0; i < 1000; i++)
            {
                void* p = cache.Alloc();            // the thread's own objects, never the remote one
                reused.Add((nint)p);
                cache.Free(p);
            }
            var h = cache.ThisThread();
            for (int i = 0; i < 1000; i++)
            {
                void* p = h.Alloc();
                reused.Add((nint)p);
                h.Free(p);
            }
        });
        Assert.DoesNotContain(fromMain, reused);
        // The reused objects sit in slab regions the worker refilled itself, not in main's cache line.
        Assert.DoesNotContain(reused, p => p / 64 == fromMain / 64);

        foreach (nint p in neighbours) cache.Free((void*)p);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void RemoteFreesGoBackToTheAllocatingThreadThroughTheDepot()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("remote-48", 48);
        const int N = 4096;
        var blocks = new nint[N];
        for (int i = 0; i < N; i++) blocks[i] = (nint)cache.Alloc();
        long slabsAfterFirstRound = cache.Stats.SlabsAllocated;

        OnThread(() =>
        {
            foreach (nint p in blocks) cache.Free((void*)p); // every free is remote
        });
        long exchanges = cache.Stats.DepotExchanges;
        var again = new HashSet<nint>();
        for (int i = 0; i < N; i++) again.Add((nint)cache.Alloc());

        // The second round is served from the parked remote magazines: the same objects, almost no new slabs. Only
        // the last, partly filled remote magazine stays with the ended thread until its cache is retired or drained.
        var stats = cache.Stats;
        Assert.True(stats.DepotExchanges >= exchanges + 30, stats.ToString());
        Assert.True(stats.SlabsAllocated - slabsAfterFirstRound <= 2, stats.ToString());
        int back = again.Count(blocks.Contains);
        Assert.True(back >= N - 128, $"only {back} of {N} objects came back");

        foreach (nint p in again) cache.Free((void*)p);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(64)]
    [InlineData(128)]
    [InlineData(192)]
    public void ObjectsOnCacheLinesOfTheirOwnAreReusedByTheFreeingThread(int size)
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache($"own-lines-{size}", size, 64);
        Assert.Equal(0, cache.SlotSize % 64);
        nint fromMain = (nint)cache.Alloc();
        nint reused = 0;
        OnThread(() =>
        {
            cache.Free((void*)fromMain);           // no other object shares its lines: no reason to keep it away
            reused = (nint)cache.Alloc();
            cache.Free((void*)reused);
        });
        Assert.Equal(fromMain, reused);
        Assert.Equal(0, cache.Stats.DepotExchanges);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ASlabSeveralThreadsRefilledFromIsSharedAndItsFreesStayLocal()
    {
        using var sys = NewSystem();
        var cache = sys.Slab.CreateCache("remote-shared-16", 16); // 256 objects per order-0 slab
        // Main holds every other object of 40 slabs: more partial slabs of its own than a refill passes over, so the
        // worker's refill takes one of them and the slab becomes shared.
        var all = new List<nint>();
        for (int i = 0; i < 40 * cache.ObjectsPerSlab; i++) all.Add((nint)cache.Alloc());
        var held = all.Where((_, i) => i % 2 == 0).ToList();
        foreach (nint p in all.Where((_, i) => i % 2 == 1)) cache.Free((void*)p);
        sys.Slab.ShrinkAll();
        bool reusedLocally = false;
        nint fromMain = 0;
        OnThread(() =>
        {
            nint own = (nint)cache.Alloc();        // from one of main's partial slabs: shared now
            fromMain = held.First(p => (p & ~4095) == (own & ~4095));
            cache.Free((void*)own);
            cache.Free((void*)fromMain);           // a shared slab's object: kept in this thread's magazine
            reusedLocally = (nint)cache.Alloc() == fromMain;
        });
        Assert.True(reusedLocally, "a free into a shared slab should stay in the freeing thread's magazine");
        foreach (nint p in held.Where(p => p != fromMain)) cache.Free((void*)p);
        cache.Shrink();
        Assert.Equal(1, cache.ActiveObjects); // the object the thread took back and kept
    }
}
