using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// The per-thread slabs (<see cref="SlabCpu"/>): a thread's own frees go back without atomics, other threads' frees
/// reach the owner through the remote list or by claiming a slab nobody owns, the thread's lists stay bounded, an
/// exited thread's slabs are adopted or come back, and the books balance after every mix.
/// </summary>
public unsafe class SlabThreadSlabTests(ITestOutputHelper output)
{
    [Fact]
    public void AThreadsOwnFreesNeedNoClaimAndNoRemoteList()
    {
        using var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("own-frees", 64);
        RunOnNewThread(() =>
        {
            var objects = new nint[1000];
            var rnd = new Random(3);
            for (int round = 0; round < 20; round++)
            {
                for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
                foreach (int i in Enumerable.Range(0, objects.Length).OrderBy(_ => rnd.Next())) cache.Free((void*)objects[i]);
            }
        });
        var stats = cache.Stats;
        output.WriteLine(stats.ToString());
        // 1000 objects are 16 slabs: all stay with the thread (full, then partial), so nothing was claimed or pushed
        // remotely, and the slabs grown in the first round served every later one.
        Assert.Equal(0, stats.SlabClaims);
        Assert.Equal(0, stats.RemoteFrees);
        Assert.InRange(stats.SlabsAllocated, 16, 17);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ObjectsFreedByAnotherThreadAreReusedByTheAllocatingThread()
    {
        using var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("handed-back", 64);
        var toConsumer = new Allocators.Tests.Threading.HandOffQueue<nint[]>();
        using var freed = new SemaphoreSlim(0);
        // The producer stays alive (and keeps its slabs) while the consumer frees each batch, then allocates the next.
        var producer = new Thread(() => Guarded(() =>
        {
            for (int round = 0; round < 30; round++)
            {
                var batch = new nint[256];
                for (int i = 0; i < batch.Length; i++) batch[i] = (nint)cache.Alloc();
                toConsumer.Add(batch);
                freed.Wait();
            }
            toConsumer.CompleteAdding();
        }));
        var consumer = new Thread(() => Guarded(() =>
        {
            foreach (var batch in toConsumer.GetConsumingEnumerable())
            {
                foreach (nint p in batch) cache.Free((void*)p);
                freed.Release();
            }
        }));
        producer.Start();
        consumer.Start();
        producer.Join();
        consumer.Join();
        var stats = cache.Stats;
        output.WriteLine(stats.ToString());
        // The consumer's frees reached the producer's slabs through their remote lists (it never took them for itself).
        Assert.Equal(30 * 256, stats.RemoteFrees);
        Assert.Equal(0, stats.SlabClaims);
        // And the producer reused them: 7680 objects went through the slabs of a few batches, not 7680 / 64 of them.
        Assert.True(stats.SlabsAllocated <= 3 * 256 / cache.ObjectsPerSlab, stats.ToString());
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    /// <summary>Runs a raw thread's body so that a failure fails the test instead of the test host.</summary>
    private static void Guarded(Action body)
    {
        try
        {
            body();
        }
        catch (Exception e)
        {
            Failures.Enqueue(e);
        }
    }

    private static readonly System.Collections.Concurrent.ConcurrentQueue<Exception> Failures = new();

    [Fact]
    public void AThreadThatFreesWhatAnotherAllocatedPutsFloatingSlabsOnTheNodeInsteadOfCollectingThem()
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("consumer", 128);
        int slabs = 40;
        int count = cache.ObjectsPerSlab * slabs;
        var objects = new nint[count];
        // The allocating thread's slabs float once a shrink takes them from it (it keeps them otherwise).
        RunOnNewThread(() =>
        {
            for (int i = 0; i < count; i++) objects[i] = (nint)cache.Alloc();
        });
        cache.Shrink();
        // The main thread frees one object of every slab: each floating slab goes to the node's partial list (it never
        // takes another thread's slab for itself).
        var before = cache.Stats;
        for (int i = 0; i < count; i += cache.ObjectsPerSlab) cache.Free((void*)objects[i]);
        var stats = cache.Stats;
        output.WriteLine(stats.ToString());
        Assert.Equal(before.SlabClaims, stats.SlabClaims);
        Assert.True(stats.PartialSlabs >= slabs - 1, stats.ToString());
        cache.CheckConsistency();
        for (int i = 0; i < count; i++)
        {
            if (i % cache.ObjectsPerSlab != 0) cache.Free((void*)objects[i]);
        }
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void AThreadTakesBackTheSlabsAShrinkFloatedWhenItFreesIntoThem()
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("taken-back", 64);
        int slabs = 20;
        var objects = Enumerable.Range(0, slabs * cache.ObjectsPerSlab).Select(_ => (nint)cache.Alloc()).ToArray();
        cache.Shrink(); // the thread's full slabs float, its last owner id kept
        long claims = cache.Stats.SlabClaims;
        foreach (nint p in objects) cache.Free((void*)p);
        var stats = cache.Stats;
        output.WriteLine(stats.ToString());
        // Each floated slab was taken back by the thread's first free into it, the rest of its frees were its own.
        Assert.True(stats.SlabClaims - claims >= slabs - 1, stats.ToString());
        Assert.Equal(0, stats.RemoteFrees);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void AThreadWithALargeLiveSetKeepsItsSlabsAndFreesWithoutAtomics()
    {
        using var sys = NewUncheckedSystem(128);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("large-live-set", 64);
        RunOnNewThread(() =>
        {
            var objects = new nint[200_000];
            var rnd = new Random(9);
            for (int round = 0; round < 3; round++)
            {
                for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
                foreach (int i in Enumerable.Range(0, objects.Length).OrderBy(_ => rnd.Next())) cache.Free((void*)objects[i]);
            }
        });
        var stats = cache.Stats;
        output.WriteLine(stats.ToString());
        // 3125 slabs, grown once and reused: no claim, no remote free, no node traffic.
        Assert.Equal(0, stats.SlabClaims);
        Assert.Equal(0, stats.RemoteFrees);
        Assert.InRange(stats.SlabsAllocated, 3125, 3126);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(2, 64)]
    [InlineData(4, 200)]
    [InlineData(3, 5000)]
    public void ManyThreadsTradingObjectsLoseNothingAndTheBooksBalance(int threads, int size)
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache($"trading-{size}", size);
        var mailboxes = Enumerable.Range(0, threads).Select(_ => new System.Collections.Concurrent.ConcurrentQueue<nint>()).ToArray();
        long stampErrors = 0;
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() => Guarded(() =>
        {
            var rnd = new Random(t);
            var mine = new List<nint>();
            for (int step = 0; step < 20000; step++)
            {
                int op = rnd.Next(10);
                if (op < 4)
                {
                    var p = (byte*)cache.Alloc();
                    if (p == null) throw new InvalidOperationException("out of memory");
                    *(long*)p = (long)p ^ 0x5a5a;
                    mine.Add((nint)p);
                }
                else if (op < 6 && mine.Count > 0)
                {
                    int i = rnd.Next(mine.Count);
                    mailboxes[rnd.Next(threads)].Enqueue(mine[i]);
                    mine[i] = mine[^1];
                    mine.RemoveAt(mine.Count - 1);
                }
                else if (mailboxes[t].TryDequeue(out nint q) || (mine.Count > 0 && (q = Take(mine, rnd)) != 0))
                {
                    if (*(long*)q != ((long)q ^ 0x5a5a)) Interlocked.Increment(ref stampErrors);
                    cache.Free((void*)q);
                }
            }
            foreach (nint p in mine) cache.Free((void*)p);
        }))).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        foreach (var box in mailboxes)
        {
            while (box.TryDequeue(out nint q)) cache.Free((void*)q);
        }
        Assert.Empty(Failures);
        Assert.Equal(0, stampErrors);
        output.WriteLine(cache.Stats.ToString());
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    private static nint Take(List<nint> mine, Random rnd)
    {
        int i = rnd.Next(mine.Count);
        nint p = mine[i];
        mine[i] = mine[^1];
        mine.RemoveAt(mine.Count - 1);
        return p;
    }
}
