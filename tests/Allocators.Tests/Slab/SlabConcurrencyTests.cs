using System.Collections.Concurrent;
using Allocators.Tests.Threading;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Concurrency: objects allocated on one thread and freed on another, many threads with hand-offs on one cache while
/// another thread shrinks and validates, and threads that exit with objects in their magazines. Every object carries a
/// (thread, sequence) stamp checked when it is freed; at the end every object is accounted for.
/// </summary>
public unsafe class SlabConcurrencyTests(ITestOutputHelper output)
{
    private static readonly TimeSpan RunTime = TimeSpan.FromMilliseconds(1200);

    private static ulong MakeStamp(int thread, long seq) => ((ulong)(uint)thread << 40) | (ulong)seq;

    private static void RunThreads(int count, Action<int> body)
    {
        var errors = new ConcurrentQueue<Exception>();
        var threads = Enumerable.Range(0, count).Select(i => new Thread(() =>
        {
            try { body(i); }
            catch (Exception e) { errors.Enqueue(e); }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (!errors.IsEmpty) throw new AggregateException(errors);
    }

    [Theory]
    [InlineData(SlabFlags.None)]
    [InlineData(SlabFlags.Poison | SlabFlags.RedZone | SlabFlags.ConsistencyChecks)]
    public void ProducerConsumerThroughABlockingCollection(SlabFlags flags)
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("pc-48", 48, 0, flags);
        var queue = new HandOffQueue<(nint Object, ulong Stamp)>(2048);
        long produced = 0, consumed = 0;
        RunThreads(3, role =>
        {
            if (role == 0)
            {
                var sw = Stopwatch.StartNew();
                for (long seq = 0; sw.Elapsed < RunTime; seq++)
                {
                    byte* p = (byte*)cache.Alloc();
                    if (p == null) throw new InvalidOperationException("allocation failed");
                    ulong stamp = MakeStamp(1, seq);
                    Stamp(p, 48, stamp);
                    queue.Add(((nint)p, stamp));
                    produced++;
                }
                queue.CompleteAdding();
            }
            else if (role == 1)
            {
                ulong expected = MakeStamp(1, 0);
                foreach (var (obj, stamp) in queue.GetConsumingEnumerable())
                {
                    Assert.Equal(expected++, stamp);
                    AssertStamp((byte*)obj, 48, stamp);
                    cache.Free((void*)obj);
                    consumed++;
                }
            }
            else
            {
                // A third thread keeps shrinking the cache, draining both threads' magazines while they work.
                var sw = Stopwatch.StartNew();
                while (!queue.IsCompleted && sw.Elapsed < RunTime * 2)
                {
                    cache.Shrink();
                    Thread.Sleep(5);
                }
            }
        });
        output.WriteLine($"{produced} objects passed from producer to consumer; {cache.Stats}");
        Assert.True(produced > 1000, $"only {produced} objects produced");
        Assert.Equal(produced, consumed);
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
        Assert.Empty(cache.Reports);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KmallocProducerConsumerWithRandomSizes()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var queue = new HandOffQueue<(nint Object, int Size, ulong Stamp)>(1024);
        long produced = 0;
        RunThreads(2, role =>
        {
            if (role == 0)
            {
                var rnd = new Random(7);
                var sw = Stopwatch.StartNew();
                for (long seq = 0; sw.Elapsed < RunTime; seq++)
                {
                    int size = rnd.Next(8) == 0 ? rnd.Next(8193, 40000) : rnd.Next(1, 8193);
                    byte* p = (byte*)sys.Slab.Kmalloc((nuint)size);
                    if (p == null) throw new InvalidOperationException($"kmalloc({size}) failed");
                    ulong stamp = MakeStamp(2, seq);
                    Stamp(p, size, stamp);
                    queue.Add(((nint)p, size, stamp));
                    produced++;
                }
                queue.CompleteAdding();
            }
            else
            {
                foreach (var (obj, size, stamp) in queue.GetConsumingEnumerable())
                {
                    AssertStamp((byte*)obj, size, stamp);
                    sys.Slab.Kfree((void*)obj);
                }
            }
        });
        output.WriteLine($"{produced} kmalloc blocks handed over");
        Assert.True(produced > 1000);
        sys.Slab.ShrinkAll();
        foreach (KmemCache k in sys.Slab.KmallocCaches) Assert.Equal(0, k.ActiveObjects);
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(SlabFlags.None, 6)]
    [InlineData(SlabFlags.HwCacheAlign, 8)]
    [InlineData(SlabFlags.Poison | SlabFlags.RedZone | SlabFlags.ConsistencyChecks, 4)]
    public void ManyThreadsWithHandOffsOnOneCache(SlabFlags flags, int threads)
    {
        const int Size = 72;
        const int MinShrinks = 10;
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("mt-72", Size, 0, flags);
        var live = new ConcurrentDictionary<nint, ulong>();
        var handOff = new ConcurrentQueue<(nint Object, ulong Stamp)>();
        var leftovers = new ConcurrentBag<(nint Object, ulong Stamp)>();
        long allocs = 0, frees = 0, handedOver = 0, shrinks = 0;
        int workersDone = 0;

        RunThreads(threads + 1, id =>
        {
            if (id == threads)
            {
                // Shrinks (draining every worker's magazines under their feet) and validates until the workers end.
                while (Volatile.Read(ref workersDone) < threads)
                {
                    if (Volatile.Read(ref shrinks) % 2 == 0) sys.Slab.ShrinkAll(); else cache.Shrink();
                    var reports = cache.Validate();
                    if (reports.Count > 0) throw new InvalidOperationException(string.Join("\n", reports.Select(r => r.Text)));
                    Interlocked.Increment(ref shrinks);
                    Thread.Sleep(3);
                }
                return;
            }
            try
            {
                var rnd = new Random(id * 7919 + 1);
                var mine = new List<(nint Object, ulong Stamp)>();
                long seq = 0;
                var sw = Stopwatch.StartNew();
                // Run for RunTime, longer (up to 4x) if the machine is so busy that the shrinker has not had its turns yet.
                while (sw.Elapsed < RunTime || (Volatile.Read(ref shrinks) < MinShrinks && sw.Elapsed < 4 * RunTime))
                {
                    int r = rnd.Next(100);
                    if (r < 40 || mine.Count == 0)
                    {
                        if (mine.Count >= 3000) goto free;
                        byte* p = (byte*)cache.Alloc();
                        if (p == null) throw new InvalidOperationException("allocation failed");
                        ulong stamp = MakeStamp(id + 1, seq++);
                        if (!live.TryAdd((nint)p, stamp))
                            throw new InvalidOperationException($"0x{(nuint)p:x} handed out twice (live as 0x{live[(nint)p]:x})");
                        Stamp(p, Size, stamp);
                        mine.Add(((nint)p, stamp));
                        Interlocked.Increment(ref allocs);
                        continue;
                    }
                    if (r < 50)
                    {
                        int i = rnd.Next(mine.Count);
                        handOff.Enqueue(mine[i]);
                        mine[i] = mine[^1];
                        mine.RemoveAt(mine.Count - 1);
                        Interlocked.Increment(ref handedOver);
                        continue;
                    }
                    if (r < 65 && handOff.TryDequeue(out var theirs))
                    {
                        FreeChecked(theirs);
                        continue;
                    }
                free:
                    {
                        int i = rnd.Next(mine.Count);
                        FreeChecked(mine[i]);
                        mine[i] = mine[^1];
                        mine.RemoveAt(mine.Count - 1);
                    }
                }
                foreach (var o in mine) leftovers.Add(o);
            }
            finally
            {
                Interlocked.Increment(ref workersDone);
            }
        });

        void FreeChecked((nint Object, ulong Stamp) o)
        {
            AssertStamp((byte*)o.Object, Size, o.Stamp);
            if (!live.TryRemove(o.Object, out ulong stamp) || stamp != o.Stamp)
                throw new InvalidOperationException($"0x{(nuint)o.Object:x} freed but not live with stamp 0x{o.Stamp:x}");
            cache.Free((void*)o.Object);
            Interlocked.Increment(ref frees);
        }

        output.WriteLine($"{threads} threads: {allocs} allocations, {frees} frees during the run, {handedOver} hand-offs, {shrinks} shrinks; {cache.Stats}");
        Assert.True(allocs > 5000, $"only {allocs} allocations");
        Assert.True(handedOver > 100, $"only {handedOver} hand-offs");
        Assert.True(shrinks >= MinShrinks, $"only {shrinks} shrinks ran during the workers' run");

        // Every object is accounted for: those still held, those in the hand-off queue.
        Assert.Equal(live.Count, leftovers.Count + handOff.Count);
        Assert.True(cache.ActiveObjects >= live.Count);
        foreach (var o in leftovers) FreeChecked(o);
        while (handOff.TryDequeue(out var o)) FreeChecked(o);
        Assert.Empty(live);
        Assert.Equal(allocs, frees);
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
        Assert.Equal(0, cache.CorruptionsFound);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KmallocFromManyThreadsWithCrossThreadFrees()
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        const int Threads = 4;
        const int MaxPending = 1000; // per inbox: a descheduled thread must not let the others fill the arena
        var inboxes = Enumerable.Range(0, Threads).Select(_ => new ConcurrentQueue<(nint, int, ulong)>()).ToArray();
        var pending = new long[Threads];
        long total = 0;
        RunThreads(Threads, id =>
        {
            var rnd = new Random(id + 100);
            var sw = Stopwatch.StartNew();
            long seq = 0;
            while (sw.Elapsed < RunTime)
            {
                int target = (id + 1 + rnd.Next(Threads - 1)) % Threads;
                if (Volatile.Read(ref pending[target]) < MaxPending)
                {
                    int size = rnd.Next(1, 3000);
                    byte* p = (byte*)sys.Slab.Kmalloc((nuint)size);
                    if (p == null)
                        throw new InvalidOperationException($"kmalloc({size}) failed with {pending.Sum()} blocks pending");
                    ulong stamp = MakeStamp(id + 1, seq++);
                    Stamp(p, size, stamp);
                    Interlocked.Increment(ref pending[target]);
                    inboxes[target].Enqueue(((nint)p, size, stamp));
                    Interlocked.Increment(ref total);
                }
                for (int k = 0; k < 2 && inboxes[id].TryDequeue(out var item); k++)
                {
                    Interlocked.Decrement(ref pending[id]);
                    AssertStamp((byte*)item.Item1, item.Item2, item.Item3);
                    sys.Slab.Kfree((void*)item.Item1);
                }
            }
        });
        foreach (var inbox in inboxes)
        {
            while (inbox.TryDequeue(out var item))
            {
                AssertStamp((byte*)item.Item1, item.Item2, item.Item3);
                sys.Slab.Kfree((void*)item.Item1);
            }
        }
        output.WriteLine($"{total} blocks");
        sys.Slab.ShrinkAll();
        foreach (KmemCache k in sys.Slab.KmallocCaches) Assert.Equal(0, k.ActiveObjects);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ObjectsCachedByAnExitedThreadAreNotStranded()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("exit-64", 64);
        int gcBefore = GC.CollectionCount(0);
        var workers = Enumerable.Range(0, 3).Select(_ => new Thread(() => AllocAndFreeOnThisThread(cache, 300))).ToList();
        workers.ForEach(t => t.Start());
        workers.ForEach(t => t.Join());
        long cached = cache.ActiveObjects;
        output.WriteLine($"{cached} objects cached after the threads exited; {cache.Stats}");
        if (GC.CollectionCount(0) == gcBefore)
            Assert.True(cached > 0, "the exited threads' magazines still hold objects (no GC ran to retire them)");

        sys.Slab.ShrinkAll(); // drains every thread's magazines, live or not
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void AllocAndFreeOnThisThread(KmemCache cache, int count)
    {
        var objects = new nint[count];
        for (int i = 0; i < count; i++)
        {
            objects[i] = (nint)cache.Alloc();
            Stamp((byte*)objects[i], 64, (ulong)i);
        }
        for (int i = 0; i < count; i++)
        {
            AssertStamp((byte*)objects[i], 64, (ulong)i);
            cache.Free((void*)objects[i]);
        }
    }
}

/// <summary>
/// An exited thread's slab context comes back through its finalizer. Alone: a thread of a test running beside it could
/// adopt the exited context first and keep its objects (by design), which this test would read as a leak.
/// </summary>
[Collection(nameof(SerialThreadContexts))]
public unsafe class SlabFinalizerTests(ITestOutputHelper output)
{
    [Fact]
    public void AnExitedThreadsMagazinesComeBackThroughItsFinalizer()
    {
        using var sys = NewUncheckedSystem();
        KmemCache cache = sys.Slab.CreateCache("finalized-64", 64);
        int gcBefore = GC.CollectionCount(0);
        var worker = new Thread(() => SlabConcurrencyTests.AllocAndFreeOnThisThread(cache, 200));
        worker.Start();
        worker.Join();
        KmemCacheStats before = cache.Stats;
        output.WriteLine($"after the thread exited: {before}");
        bool retiredAlready = GC.CollectionCount(0) != gcBefore;
        if (!retiredAlready) Assert.True(before.ActiveObjects > 0, "the exited thread's magazines hold objects");

        for (int i = 0; i < 2; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        KmemCacheStats after = cache.Stats;
        output.WriteLine($"after GC and finalizers: {after}");
        Assert.Equal(0, cache.ActiveObjects); // no Shrink: the thread's magazines were flushed when its cache was retired
        if (!retiredAlready) Assert.True(after.CpuCacheFlush > before.CpuCacheFlush, "the retired thread cache was flushed");
        Assert.Equal(before.AllocFastPath, after.AllocFastPath); // the dead thread's counters are kept
        Assert.Equal(before.FreeFastPath, after.FreeFastPath);
        cache.Destroy();
    }
}
