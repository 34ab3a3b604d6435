using System.Collections.Concurrent;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// A thread that grows a slab takes the slab's first objects into its magazine without linking them into the free list;
/// magazines moving through the depot are never lost (every one is in a thread cache or in the depot).
/// </summary>
public unsafe class SlabGrowthAndDepotTests
{
    [Fact]
    public void AGrowingAllocationNeverWritesTheFreePointersOfTheObjectsItTakes()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("untouched-16", 16);
        KmemCacheData* d = cache.Data;
        int reserved = Math.Min(cache.MinTarget, d->Objects);
        Assert.True(reserved < d->Objects, "the rest of the slab stays on its free list");
        var words = new ulong[d->Objects];
        var objects = new nint[d->Objects];
        RunOnNewThread(() =>
        {
            // The next order-0 pages this thread's slab growth gets come off its page list, newest first: mark them.
            var pages = new List<nint>();
            for (int i = 0; i < 8; i++) pages.Add((nint)sys.Pages.AllocPages(Gfp.Kernel, 0));
            foreach (nint p in pages) new Span<byte>(sys.Pages.PageAddress((PageFrame*)p), PageFrame.PageSize).Fill(0xEE);
            foreach (nint p in pages) sys.Pages.FreePages((PageFrame*)p, 0);
            var h = cache.ThisThread();
            for (int i = 0; i < objects.Length; i++)
            {
                objects[i] = (nint)h.Alloc();
                words[i] = *(ulong*)((byte*)objects[i] + d->Offset); // before anything writes the object
            }
            foreach (nint p in objects) h.Free((void*)p);
        });
        const ulong Pattern = 0xEEEE_EEEE_EEEE_EEEE;
        for (int i = 0; i < reserved; i++) Assert.Equal(Pattern, words[i]);             // taken straight into the magazine
        Assert.Contains(words.Skip(reserved), w => w != Pattern);                       // the rest went through the free list
        Assert.Equal(1, cache.Stats.SlabsAllocated);
        Assert.Empty(cache.Validate());
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void AGrowingAllocationWhileADrainerHoldsTheThreadCacheGivesTheObjectsBackToTheSlab()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        KmemCache? cache = null;
        bool drainHeld = false;
        // The constructor runs while the new slab is formatted: hold the thread's cache there as a drainer would.
        cache = sys.Slab.CreateCache("drained-16", 16, 0, SlabFlags.None, _ =>
        {
            if (drainHeld) return;
            drainHeld = true;
            Volatile.Write(ref cache!.ThisThreadMagazines()->Header.DrainRequested, 1);
        });
        nint obj = 0;
        KmemCacheStats stats = default;
        RunOnNewThread(() =>
        {
            obj = (nint)cache.Alloc();
            stats = cache.Stats;
            Volatile.Write(ref cache.ThisThreadMagazines()->Header.DrainRequested, 0);
            cache.Free((void*)obj);
        });
        Assert.True(drainHeld);
        Assert.NotEqual(0, obj);
        Assert.Equal((1, 1), (stats.SlabsAllocated, stats.ActiveObjects)); // only the object handed out is in use
        Assert.Empty(cache.Validate());
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void MagazinesExchangedThroughTheDepotAreAllAccountedFor()
    {
        // A producer takes full magazines from the depot and, once it has as many spares as it keeps, gives its empty
        // ones back in the same hold; a consumer without spares takes an empty one as it parks a full one.
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("census-64", 64);
        using var handOver = new BlockingCollection<nint[]>(4);
        long exchangesBefore = cache.Stats.DepotExchanges;
        var producer = new Thread(() =>
        {
            for (int round = 0; round < 60; round++)
            {
                var batch = new nint[1500];
                for (int i = 0; i < batch.Length; i++) batch[i] = (nint)cache.Alloc();
                handOver.Add(batch);
            }
            handOver.CompleteAdding();
        });
        var consumer = new Thread(() =>
        {
            foreach (nint[] batch in handOver.GetConsumingEnumerable())
            {
                foreach (nint p in batch) cache.Free((void*)p);
            }
        });
        producer.Start();
        consumer.Start();
        producer.Join();
        consumer.Join();
        Assert.True(cache.Stats.DepotExchanges - exchangesBefore > 1000, $"{cache.Stats.DepotExchanges - exchangesBefore} depot exchanges");
        var (live, accountedFor) = cache.MagazineCensus();
        Assert.Equal(accountedFor, live);

        sys.Slab.ShrinkAll();
        (live, accountedFor) = cache.MagazineCensus();
        Assert.Equal(accountedFor, live);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }
}
