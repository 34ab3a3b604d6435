using System.Collections.Concurrent;
using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// A thread that starts after another exited takes over the exited thread's magazines instead of the exited thread
/// flushing them to the slabs and the new one refilling from there (what a server that starts a thread per task, or
/// larson, does all the time); nothing is lost on the way.
/// </summary>
public unsafe class SlabThreadTakeoverTests(ITestOutputHelper output)
{
    [Fact]
    public void ANewThreadAllocatesFromTheMagazinesOfOneThatExited()
    {
        // A GC between the exit and the next registration lets the exited thread's finalizer flush its magazines
        // first: such an attempt proves nothing and is made again.
        for (int attempt = 1; !TakeoverScenario(lastAttempt: attempt == 5); attempt++) { }
    }

    private bool TakeoverScenario(bool lastAttempt)
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("takeover-64", 64);
        var freedByFirst = new HashSet<nint>();
        int collections = GC.CollectionCount(0);
        var first = new Thread(() =>
        {
            var objects = new nint[24];
            for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
            foreach (nint p in objects) cache.Free((void*)p);
            freedByFirst.UnionWith(objects);
        });
        first.Start();
        first.Join();
        KmemCacheStats before = cache.Stats;

        var fromSecond = new List<nint>();
        var second = new Thread(() =>
        {
            for (int i = 0; i < 8; i++) fromSecond.Add((nint)cache.Alloc());
            foreach (nint p in fromSecond) cache.Free((void*)p);
        });
        second.Start();
        second.Join();
        KmemCacheStats after = cache.Stats;
        output.WriteLine($"before: {before}\nafter:  {after}");
        if (GC.CollectionCount(0) != collections && !lastAttempt) return false;

        Assert.True(before.ActiveObjects > 0, "the exited thread's magazines held its objects");
        Assert.Equal(1, cache.ThreadCacheAdoptions);
        Assert.All(fromSecond, p => Assert.Contains(p, freedByFirst));
        Assert.Equal(before.CpuCacheRefill, after.CpuCacheRefill); // served from the magazines it took over, no refill
        Assert.Equal(before.CpuCacheFlush, after.CpuCacheFlush);   // and nothing was flushed to the slabs for it
        Assert.Equal(before.ActiveObjects, after.ActiveObjects);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
        return true;
    }

    [Fact]
    public void AnAdoptedCacheKeepsTheExitedThreadsStash()
    {
        // The stash is at most what any thread keeps for its runs: it moves with the cache, neither flushed to the slabs
        // (slow for the next run) nor parked in the depot (where nothing bounds it per thread).
        for (int attempt = 1; !StashScenario(lastAttempt: attempt == 5); attempt++) { }
    }

    private bool StashScenario(bool lastAttempt)
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("stash-64", 64);
        int collections = GC.CollectionCount(0);
        nint firstCache = 0;
        int stashed = 0;
        var first = new Thread(() =>
        {
            var objects = new nint[2000];
            for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
            foreach (nint p in objects) cache.Free((void*)p);
            MagazineCache* mc = cache.ThisThreadMagazines();
            firstCache = (nint)mc;
            stashed = mc->NrStash;
        });
        first.Start();
        first.Join();
        int parkedBefore = cache.Data->NrFull;
        long flushesBefore = cache.Stats.CpuCacheFlush;

        nint secondCache = 0;
        int stashAfter = 0;
        var second = new Thread(() =>
        {
            MagazineCache* mc = cache.ThisThreadMagazines();
            secondCache = (nint)mc;
            stashAfter = mc->NrStash;
        });
        second.Start();
        second.Join();
        output.WriteLine($"stash {stashed} -> {stashAfter}, depot {parkedBefore} -> {cache.Data->NrFull}; {cache.Stats}");
        if (GC.CollectionCount(0) != collections && !lastAttempt) return false;

        Assert.True(stashed > 0, "a run of frees fills the stash");
        Assert.Equal(firstCache, secondCache);
        Assert.Equal(stashed, stashAfter);
        Assert.Equal(parkedBefore, cache.Data->NrFull);
        Assert.Equal(flushesBefore, cache.Stats.CpuCacheFlush);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
        return true;
    }

    [Fact]
    public void SlotArraysHandedToNewThreadsKeepEveryObject()
    {
        // larson's pattern on kmalloc: each generation of threads replaces random blocks of its slot array, then hands
        // the array to a thread it starts and exits; the new thread waits for that exit before its first operation, so
        // its registrations find the exited thread's magazine caches and adopt them.
        var sys = NewSystem(64);
        bool abandoned = false; // stuck threads still use the memory system: leave it alive then
        try
        {
            HandSlotArraysOn(sys, () => abandoned = true);
        }
        finally
        {
            if (!abandoned) sys.Dispose();
        }
    }

    private void HandSlotArraysOn(MemorySystem sys, Action onTimeout)
    {
        string baseline = Baseline(sys);
        const int Arrays = 3, Slots = 400, Generations = 40, ReplacementsPerGeneration = 2000;
        var blocks = new (nint Pointer, int Size, ulong Stamp)[Arrays][];
        for (int a = 0; a < Arrays; a++)
        {
            blocks[a] = new (nint, int, ulong)[Slots];
            var random = new Random(a);
            for (int i = 0; i < Slots; i++) blocks[a][i] = NewBlock(sys, random.Next(8, 1001), (ulong)(a * Slots + i));
        }

        var errors = new ConcurrentQueue<Exception>();
        using var finished = new CountdownEvent(Arrays);
        void Serve(int array, int generation, Thread? predecessor)
        {
            try
            {
                predecessor?.Join();
                var random = new Random(array * 1000 + generation);
                var k = sys.Slab.ThisThread();
                var slots = blocks[array];
                for (int n = 0; n < ReplacementsPerGeneration; n++)
                {
                    int v = random.Next(Slots);
                    AssertStamp((byte*)slots[v].Pointer, slots[v].Size, slots[v].Stamp);
                    k.Kfree((void*)slots[v].Pointer);
                    int size = random.Next(8, 1001);
                    ulong stamp = ((ulong)array << 48) | ((ulong)generation << 32) | (uint)n;
                    var p = (byte*)k.Kmalloc((nuint)size);
                    Assert.True(p != null, "kmalloc failed");
                    Stamp(p, size, stamp);
                    slots[v] = ((nint)p, size, stamp);
                }
                if (generation + 1 < Generations)
                {
                    Thread self = Thread.CurrentThread;
                    new Thread(() => Serve(array, generation + 1, self)).Start();
                    return;
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
            finished.Signal();
        }

        RunWithDeadline("thread generations", () =>
        {
            for (int a = 0; a < Arrays; a++)
            {
                int array = a;
                new Thread(() => Serve(array, 0, null)).Start();
            }
            finished.Wait();
        }, onTimeout, seconds: 60);
        if (!errors.IsEmpty) throw new AggregateException(errors);

        long adoptions = sys.Slab.KmallocCaches.Sum(c => c.ThreadCacheAdoptions);
        output.WriteLine($"{adoptions} magazine caches adopted");
        // Each of the 3 x 39 successors adopts its predecessor's cache of every class it touches unless a GC's
        // finalizer retired it first.
        Assert.True(adoptions >= Arrays * (Generations - 1), $"only {adoptions} adoptions");

        foreach (var slots in blocks)
        {
            foreach (var (pointer, size, stamp) in slots)
            {
                AssertStamp((byte*)pointer, size, stamp);
                sys.Slab.Kfree((void*)pointer);
            }
        }
        sys.Slab.ShrinkAll();
        foreach (KmemCache c in sys.Slab.KmallocCaches) Assert.Equal(0, c.ActiveObjects);
        AssertBackToBaseline(sys, baseline);
    }

    private static (nint, int, ulong) NewBlock(MemorySystem sys, int size, ulong stamp)
    {
        var p = (byte*)sys.Slab.Kmalloc((nuint)size);
        Stamp(p, size, stamp);
        return ((nint)p, size, stamp);
    }
}
