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
        int minTarget = cache.MinTarget;
        Assert.Equal(4096 / 64, minTarget);
        Assert.True(minTarget < d->MagazineCapacity, $"capacity {d->MagazineCapacity}");

        var objects = new nint[10];
        long active = 0;
        RunOnNewThread(() =>
        {
            var h = cache.ThisThread();
            for (int i = 0; i < objects.Length; i++) objects[i] = (nint)h.Alloc();
            active = cache.ActiveObjects;
            foreach (nint p in objects) h.Free((void*)p);
        });

        // The refill took MinTarget objects out of the slabs, not a whole magazine's capacity.
        Assert.Equal(minTarget, active);
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
            limitAfterAllocs = mc->FillLimit;
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
            Assert.Equal(mc->Target, mc->FillLimit);
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

    private static void RunOnNewThread(Action body) => RunWithDeadline("magazine target worker", body, () => { });
}
