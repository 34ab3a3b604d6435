using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// <see cref="MagazineCache.Target"/>: a thread's magazines start at 4 KiB of objects, grow to full capacity over runs of
/// allocations or frees, and shrink back when its slow paths keep changing direction; only a thread in runs stashes.
/// </summary>
public unsafe class SlabMagazineTargetTests
{
    [Fact]
    public void AThreadThatAllocatesAFewObjectsTakesASmallMagazineFromTheSlabs()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("target-64", 64);
        KmemCacheData* d = cache.Data;
        int minTarget = cache.MinTarget, capacity = d->MagazineCapacity;
        Assert.Equal(4096 / 64, minTarget);
        Assert.True(minTarget < capacity, $"capacity {capacity}");
        // Partial slabs holding far more free objects than a whole magazine: fill four slabs, keep one object in each.
        int perSlab = d->Objects, slabs = 4;
        var filled = new nint[perSlab * slabs];
        for (int i = 0; i < filled.Length; i++) filled[i] = (nint)cache.Alloc();
        var kept = filled.Where((_, i) => i % perSlab == 0).ToArray();
        foreach (nint p in filled.Except(kept)) cache.Free((void*)p);
        cache.Shrink();
        long before = cache.ActiveObjects;
        Assert.Equal(kept.Length, before);

        var objects = new nint[10];
        long taken = 0;
        int target = 0;
        RunOnNewThread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            var h = cache.ThisThread();
            for (int i = 0; i < objects.Length; i++) objects[i] = (nint)h.Alloc();
            taken = cache.ActiveObjects - before;
            target = mc->Target;
            foreach (nint p in objects) h.Free((void*)p);
        });

        // One refill of MinTarget objects, not a whole magazine's capacity, and no growth of the target for it.
        Assert.Equal(minTarget, taken);
        Assert.Equal(minTarget, target);
        foreach (nint p in kept) cache.Free((void*)p);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void AFirstAllocationThatGrowsASlabIsOneSlowPathNotTwo()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("target-grow-64", 64);
        int target = 0;
        RunOnNewThread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            var h = cache.ThisThread();
            h.Free(h.Alloc()); // the cache has no slab yet: the refill finds none, a slab is grown, the refill runs again
            target = mc->Target;
        });

        Assert.Equal(cache.MinTarget, target);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void RunsGrowMagazinesToFullCapacityAndFillTheStash()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("target-run-64", 64);
        KmemCacheData* d = cache.Data;
        int capacity = d->MagazineCapacity;
        int targetAfterAllocs = 0, limitAfterAllocs = 0, stashedAfterFrees = 0;
        RunOnNewThread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            var h = cache.ThisThread();
            var mine = new nint[(d->MaxStash + 4) * capacity];
            for (int i = 0; i < mine.Length; i++) mine[i] = (nint)h.Alloc();
            targetAfterAllocs = mc->Target;
            limitAfterAllocs = mc->Loaded->Limit;
            foreach (nint p in mine) h.Free((void*)p);
            stashedAfterFrees = mc->NrStash;
        });

        Assert.Equal(capacity, targetAfterAllocs);
        Assert.Equal(capacity, limitAfterAllocs);
        Assert.Equal(d->MaxStash, stashedAfterFrees);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void SlowPathsThatKeepChangingDirectionHalveTheTargetAndOneChangeDoesNot()
    {
        using var sys = NewSystem(64);
        var cache = sys.Slab.CreateCache("target-policy-64", 64);
        int capacity = cache.Data->MagazineCapacity, minTarget = cache.MinTarget;
        var targets = new List<int>();
        RunOnNewThread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            Assert.Equal(minTarget, mc->Target);
            void Step(int direction)
            {
                cache.Adapt(mc, direction);
                targets.Add(mc->Target);
            }
            // A run of allocations, then a run of frees (one change of direction), then a mix that alternates.
            Step(+1); Step(+1); Step(+1); Step(-1); Step(-1); Step(+1); Step(-1); Step(+1);
            Assert.Equal(mc->Target, mc->Loaded->Limit);
        });

        Assert.Equal([minTarget, 2 * minTarget, capacity, capacity, capacity, capacity, minTarget, minTarget], targets);
        Assert.Equal(capacity, 2 * minTarget);
    }

    [Fact]
    public void AThreadInASteadyMixParksFullMagazinesInTheDepotNotItsStash()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("target-mix-64", 64);
        KmemCacheData* d = cache.Data;
        int minTarget = cache.MinTarget;
        // Allocated elsewhere; this thread's last two slow paths went one way and then the other (a free, then an
        // allocation), so the free below that moves a full magazine out changes direction once more.
        var objects = new nint[3 * minTarget];
        for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
        int stashed = -1, target = 0;
        long parked = -1;
        RunOnNewThread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            cache.Adapt(mc, -1);
            cache.Adapt(mc, +1);
            Assert.Equal(minTarget, mc->Target);
            var h = cache.ThisThread();
            // Two magazines fill; the next free is the slow path that moves a full one out: not in a run, so the
            // magazine goes to the depot.
            for (int i = 0; i <= 2 * minTarget; i++) h.Free((void*)objects[i]);
            stashed = mc->NrStash;
            parked = d->NrFull;
            target = mc->Target;
            for (int i = 2 * minTarget + 1; i < objects.Length; i++) h.Free((void*)objects[i]);
        });

        Assert.Equal(0, stashed);
        Assert.Equal(1, parked);
        Assert.Equal(minTarget, target);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void RemoteFreesParkWholeMagazinesWhateverTheTarget()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        // 72-byte objects share cache lines, so their slabs have owners and frees by another thread are remote.
        var cache = sys.Slab.CreateCache("target-remote-72", 72);
        KmemCacheData* d = cache.Data;
        int capacity = d->MagazineCapacity;
        Assert.True(cache.MinTarget < capacity, $"min target {cache.MinTarget}, capacity {capacity}");
        var objects = new nint[3 * capacity];
        using var allocated = new ManualResetEventSlim();
        using var freed = new ManualResetEventSlim();
        // The allocating thread stays alive while the other frees: an ended thread's slabs pass to the next thread.
        var allocator = new Thread(() =>
        {
            var h = cache.ThisThread();
            for (int i = 0; i < objects.Length; i++) objects[i] = (nint)h.Alloc();
            allocated.Set();
            freed.Wait();
        });
        allocator.Start();
        allocated.Wait();
        int target = 0;
        RunOnNewThread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            var h = cache.ThisThread();
            foreach (nint p in objects) h.Free((void*)p);
            target = mc->Target;
        });
        freed.Set();
        allocator.Join();

        var parked = new List<int>();
        for (Magazine* m = d->FullMagazines; m != null; m = m->Next) parked.Add(m->Count);
        for (int owner = 0; owner < d->OwnedCapacity; owner++)
            for (Magazine* m = d->OwnedFull[owner]; m != null; m = m->Next) parked.Add(m->Count);
        Assert.Equal(cache.MinTarget, target);
        Assert.True(parked.Count >= 2, $"{parked.Count} magazines parked");
        Assert.All(parked, c => Assert.Equal(capacity, c));
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Theory]
    [InlineData(16)] // more objects per slab than the target: the rest stay on the slab's free list (a partial slab)
    [InlineData(32)] // as many as the target: the whole slab goes to the magazine (a full slab)
    public void AnAllocationThatGrowsASlabLoadsItsFirstObjectsIntoTheMagazine(int size)
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache($"grow-{size}", size);
        KmemCacheData* d = cache.Data;
        int reserved = Math.Min(cache.MinTarget, d->Objects);
        var objects = new nint[d->Objects + 1];
        KmemCacheStats afterFirst = default, afterAll = default;
        RunOnNewThread(() =>
        {
            var h = cache.ThisThread();
            objects[0] = (nint)h.Alloc();
            afterFirst = cache.Stats;
            for (int i = 1; i < objects.Length; i++) objects[i] = (nint)h.Alloc();
            afterAll = cache.Stats;
            foreach (nint p in objects) h.Free((void*)p);
        });
        byte* slab = (byte*)objects[0] - (reserved - 1) * size;
        Assert.Equal(0, (nint)slab & 4095);                        // the first pop is the top: object reserved - 1 of the new slab
        Assert.Equal((1, reserved), (afterFirst.SlabsAllocated, afterFirst.ActiveObjects));
        Assert.Equal(reserved < d->Objects ? 1 : 0, afterFirst.PartialSlabs);
        for (int i = 0; i < reserved; i++) Assert.Equal((nint)(slab + (reserved - 1 - i) * size), objects[i]);
        // The rest of the slab comes through the ordinary refill, then a second slab: every object distinct.
        Assert.Equal(objects.Length, objects.Distinct().Count());
        Assert.Equal(2, afterAll.SlabsAllocated);
        Assert.Empty(cache.Validate());
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }
}
