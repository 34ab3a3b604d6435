using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// The loaded magazine's <see cref="Magazine.Limit"/>: a thread whose frees go to the depot for other threads (a consumer) parks
/// small magazines, so freed objects reach their allocating thread sooner; once it reuses its own stash it fills whole
/// magazines again.
/// </summary>
public unsafe class SlabFillLimitTests
{
    [Fact]
    public void AConsumerParksSmallMagazinesUntilItReusesItsOwnStash()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("fill-limit-64", 64);
        KmemCacheData* d = cache.Data;
        int capacity = d->MagazineCapacity;
        int consumerLimit = Math.Min(capacity, 32);
        Assert.True(consumerLimit < capacity, $"capacity {capacity}");
        // Enough for the consumer to fill both loaded magazines and its whole stash, then park several more.
        int objects = (2 + d->MaxStash) * capacity + 6 * consumerLimit;
        var produced = new nint[objects];
        for (int i = 0; i < objects; i++) produced[i] = (nint)cache.Alloc();

        int limitAfterFrees = 0, limitAfterReuse = 0;
        var parkedCounts = new List<int>();
        var consumer = new Thread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            var h = cache.ThisThread();
            foreach (nint p in produced) h.Free((void*)p);
            limitAfterFrees = mc->Loaded->Limit;
            for (Magazine* m = d->FullMagazines; m != null; m = m->Next) parkedCounts.Add(m->Count);

            // Allocating takes the loaded magazines and then the stash: this thread reuses its own frees again.
            int reuse = 3 * capacity;
            var again = new nint[reuse];
            for (int i = 0; i < reuse; i++) again[i] = (nint)h.Alloc();
            limitAfterReuse = mc->Loaded->Limit;
            foreach (nint p in again) h.Free((void*)p);
        });
        consumer.Start();
        consumer.Join();

        Assert.Equal(consumerLimit, limitAfterFrees);
        Assert.True(parkedCounts.Count(c => c == consumerLimit) >= 4, $"parked magazines hold {string.Join(", ", parkedCounts)}");
        Assert.DoesNotContain(parkedCounts, c => c > capacity || c == 0);
        Assert.Equal(capacity, limitAfterReuse);

        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void AThreadFreeingWhatItAllocatedKeepsWholeMagazinesHoweverLongItsRunOfFrees()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("fill-limit-own-64", 64);
        KmemCacheData* d = cache.Data;
        int capacity = d->MagazineCapacity;
        int objects = (2 + d->MaxStash + 8) * capacity;
        int limitAfterFrees = 0;
        var parkedCounts = new List<int>();
        var worker = new Thread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            var h = cache.ThisThread();
            var mine = new nint[objects];
            for (int i = 0; i < objects; i++) mine[i] = (nint)h.Alloc();
            foreach (nint p in mine) h.Free((void*)p);
            limitAfterFrees = mc->Loaded->Limit;
            for (Magazine* m = d->FullMagazines; m != null; m = m->Next) parkedCounts.Add(m->Count);
        });
        worker.Start();
        worker.Join();

        Assert.Equal(capacity, limitAfterFrees);
        Assert.True(parkedCounts.Count >= 4, $"{parkedCounts.Count} magazines parked");
        Assert.All(parkedCounts, c => Assert.Equal(capacity, c));
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }
}
