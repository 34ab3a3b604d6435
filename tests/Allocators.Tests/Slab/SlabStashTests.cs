using System.Runtime.CompilerServices;
using Allocators.Slab;
using Allocators.Threading;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// A thread's own spare magazines (<see cref="MagazineCache.Stash"/>): a burst of frees and then allocations on one
/// thread stays off the shared depot, everything stashed goes back on drains and thread exit, and per-thread blocks
/// never share a prefetcher's line pair with another thread's.
/// </summary>
public unsafe class SlabStashTests
{
    [Fact]
    public void ABurstWithinTheStashNeverTouchesTheDepot()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("stash-64", 64);
        KmemCacheData* d = cache.Data;
        Assert.True(d->MaxStash >= 4, $"MaxStash {d->MaxStash}");
        int burst = (2 + d->MaxStash) * d->MagazineCapacity - 1;
        var objects = new nint[burst];
        var h = cache.ThisThread();
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < burst; i++) objects[i] = (nint)h.Alloc();
            long exchanges = cache.Stats.DepotExchanges;
            foreach (nint p in objects) h.Free((void*)p);
            for (int i = 0; i < burst; i++) objects[i] = (nint)h.Alloc();
            // From the second round on, every object comes back through this thread's own magazines.
            if (round > 0) Assert.Equal(exchanges, cache.Stats.DepotExchanges);
            foreach (nint p in objects) h.Free((void*)p);
        }
        Assert.Equal(objects.Length, objects.Distinct().Count());
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void StashedObjectsGoBackOnShrinkFromAnotherThreadAndOnThreadExit()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("stash-drain-256", 256);
        KmemCacheData* d = cache.Data;
        int burst = (2 + d->MaxStash) * d->MagazineCapacity;
        var parked = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        var worker = new Thread(() =>
        {
            var objects = new nint[burst];
            for (int i = 0; i < burst; i++) objects[i] = (nint)cache.Alloc();
            foreach (nint p in objects) cache.Free((void*)p);
            parked.Set();
            release.Wait();
            for (int i = 0; i < burst; i++) objects[i] = (nint)cache.Alloc();
            foreach (nint p in objects) cache.Free((void*)p);
        });
        worker.Start();
        parked.Wait();
        Assert.True(cache.ActiveObjects >= burst, "the worker's magazines and stash hold its objects");
        cache.Shrink(); // drains the live worker's stash from this thread
        Assert.Equal(0, cache.ActiveObjects);
        release.Set();
        worker.Join();
        sys.Slab.ShrinkAll(); // and the exited worker's
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void TheDepotHasACacheLineOfItsOwnAwayFromTheFastPathFields()
    {
        var d = default(KmemCacheData);
        static long At(ref KmemCacheData d, ref byte field) => Unsafe.ByteOffset(ref Unsafe.As<KmemCacheData, byte>(ref d), ref field);
        long depot = At(ref d, ref Unsafe.As<int, byte>(ref d.DepotLock));
        Assert.Equal(KmemCacheData.DepotLineOffset, depot);
        Assert.Equal(0, depot % 64);
        foreach (long field in new[]
        {
            At(ref d, ref Unsafe.As<int, byte>(ref d.NrFull)), At(ref d, ref Unsafe.As<int, byte>(ref d.NrEmpty)),
            At(ref d, ref Unsafe.As<long, byte>(ref d.DepotExchanges)), At(ref d, ref Unsafe.As<int, byte>(ref d.OwnedCapacity)) + 3,
        })
        {
            Assert.Equal(depot / 64, field / 64);
        }
        // The fields every fast-path free reads share the first line, which nothing on a slow path writes.
        foreach (long field in new[]
        {
            At(ref d, ref Unsafe.As<int, byte>(ref d.RedLeftPad)), At(ref d, ref Unsafe.As<uint, byte>(ref d.SlabBytes)),
            At(ref d, ref Unsafe.As<ulong, byte>(ref d.DivisorMagic)) + 7,
        })
        {
            Assert.Equal(0, field / 64);
        }
        Assert.NotEqual(depot / 64, At(ref d, ref Unsafe.As<long, byte>(ref d.AllocSlowPath)) / 64);
    }

    [Fact]
    public void PerThreadBlocksAndMagazinesOwnWholeLinePairs()
    {
        for (int capacity = 1; capacity < 200; capacity += 7)
        {
            Magazine* m = Magazine.Create(capacity);
            Assert.Equal(0, (long)m % CacheLines.FalseSharingSpan);
            Assert.Equal(0, m->Count);
            Assert.Equal(0, (long)m->Objects[-1]); // the guard word
            Magazine.Free(m);
        }
        using var sys = NewSystem();
        var cache = sys.Slab.CreateCache("isolated-64", 64);
        Assert.Equal(0, (long)cache.ThisThreadMagazines() % CacheLines.FalseSharingSpan);
    }
}
