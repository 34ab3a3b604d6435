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
        using var sys = NewSystem();
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
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("handed-back", 64);
        using var toConsumer = new System.Collections.Concurrent.BlockingCollection<nint[]>();
        var producer = new Thread(() =>
        {
            for (int round = 0; round < 30; round++)
            {
                var batch = new nint[256];
                for (int i = 0; i < batch.Length; i++) batch[i] = (nint)cache.Alloc();
                toConsumer.Add(batch);
            }
            toConsumer.CompleteAdding();
        });
        var consumer = new Thread(() =>
        {
            foreach (var batch in toConsumer.GetConsumingEnumerable())
                foreach (nint p in batch) cache.Free((void*)p);
        });
        producer.Start();
        consumer.Start();
        producer.Join();
        consumer.Join();
        var stats = cache.Stats;
        output.WriteLine(stats.ToString());
        // The consumer frees what the producer allocated: by claiming slabs nobody owns or through remote lists.
        Assert.True(stats.SlabClaims + stats.RemoteFrees > 0, stats.ToString());
        // And the producer reused them: 7680 objects went through far fewer slabs than 7680 / 64.
        Assert.True(stats.SlabsAllocated < 7680 / cache.ObjectsPerSlab, stats.ToString());
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        cache.CheckConsistency();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void AConsumerKeepsAtMostMaxPartialSlabsAndTheRestGoToTheNode()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("consumer", 128);
        int maxPartial = cache.Data->MaxPartial;
        // Two slabs' worth per slab index: the allocating thread's slabs all become full, then float.
        int count = cache.ObjectsPerSlab * (3 * maxPartial + 10);
        var objects = new nint[count];
        RunOnNewThread(() =>
        {
            for (int i = 0; i < count; i++) objects[i] = (nint)cache.Alloc();
        });
        // The main thread frees one object of every slab: it claims each floating slab, keeps at most MaxPartial.
        int claimedBefore = (int)cache.Stats.SlabClaims;
        for (int i = 0; i < count; i += cache.ObjectsPerSlab) cache.Free((void*)objects[i]);
        var stats = cache.Stats;
        output.WriteLine($"{stats}, max partial {maxPartial}");
        Assert.True(stats.SlabClaims - claimedBefore >= 2 * maxPartial, stats.ToString());
        Assert.True(stats.PartialSlabs >= stats.SlabClaims - claimedBefore - maxPartial, "the slabs beyond MaxPartial went to the node");
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
    public void AThreadThatStartsAfterAnotherEndedAdoptsItsSlabs()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("adopted", 64);
        // A thread allocates and frees a little, keeping a current slab with free objects, and ends.
        RunOnNewThread(() =>
        {
            var objects = Enumerable.Range(0, 40).Select(_ => (nint)cache.Alloc()).ToArray();
            foreach (nint p in objects) cache.Free((void*)p);
        });
        long grown = cache.Stats.SlabsAllocated;
        long adoptions = SlabCpus.Adoptions;
        // The next thread to register takes its context over, slabs and all: its allocations need no new slab.
        RunOnNewThread(() =>
        {
            var objects = Enumerable.Range(0, 40).Select(_ => (nint)cache.Alloc()).ToArray();
            foreach (nint p in objects) cache.Free((void*)p);
        });
        Assert.True(SlabCpus.Adoptions > adoptions, "the second thread adopted a context");
        Assert.Equal(grown, cache.Stats.SlabsAllocated);
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
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache($"trading-{size}", size);
        var mailboxes = Enumerable.Range(0, threads).Select(_ => new System.Collections.Concurrent.ConcurrentQueue<nint>()).ToArray();
        long stampErrors = 0;
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rnd = new Random(t);
            var mine = new List<nint>();
            for (int step = 0; step < 20000; step++)
            {
                int op = rnd.Next(10);
                if (op < 4)
                {
                    var p = (byte*)cache.Alloc();
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
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        foreach (var box in mailboxes)
        {
            while (box.TryDequeue(out nint q)) cache.Free((void*)q);
        }
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
