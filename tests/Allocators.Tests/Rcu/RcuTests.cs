using Allocators.Rcu;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;
using Allocators.Tests.Threading;

namespace Allocators.Tests.Rcu;

/// <summary>
/// The RCU domain: read sections, grace periods that wait for the readers that began before them and only for those,
/// kfree_rcu that defers reuse past every such reader, rcu_barrier, and the misuse it refuses.
/// </summary>
public unsafe class RcuTests
{
    /// <summary>Runs <paramref name="body"/> on a thread of its own; the returned thread is started.</summary>
    private static Thread Start(Action body)
    {
        var t = new Thread(() => body()) { IsBackground = true };
        t.Start();
        return t;
    }

    [Fact]
    public void KfreeRcuObjectIsNotReusedWhileAReaderSeesItAndIsReusedAfter()
    {
        using var sys = NewUncheckedSystem();
        SlabAllocator slab = sys.Slab;
        RcuDomain rcu = sys.Rcu;
        long* p = (long*)slab.Kmalloc(64);
        for (int i = 0; i < 8; i++) p[i] = 0x1234_5678_0000L + i;
        nint published = (nint)p;

        using var inside = new ManualResetEventSlim();
        using var leave = new ManualResetEventSlim();
        bool intactAtEnd = false;
        var reader = Start(() =>
        {
            rcu.RcuReadLock();
            var seen = (long*)Volatile.Read(ref published);
            inside.Set();
            leave.Wait();
            bool ok = true;
            for (int i = 0; i < 8; i++) ok &= seen[i] == 0x1234_5678_0000L + i;
            intactAtEnd = ok;
            rcu.RcuReadUnlock();
        });
        inside.Wait();

        Volatile.Write(ref published, 0); // unpublish, then defer the free
        long invokedBefore = rcu.CallbacksInvoked;
        slab.KfreeRcu(p);
        Thread.Sleep(30); // give a broken implementation every chance to free early
        var held = new List<nint>();
        for (int i = 0; i < 4000; i++)
        {
            void* q = slab.Kmalloc(64);
            Assert.True(q != null);
            Assert.True(q != p, $"the object came back after {i} allocations while a reader was inside its section");
            held.Add((nint)q);
        }
        Assert.Equal(invokedBefore, rcu.CallbacksInvoked);

        leave.Set();
        reader.Join();
        Assert.True(intactAtEnd, "the reader saw the object change under it");
        rcu.RcuBarrier();
        Assert.True(rcu.CallbacksInvoked > invokedBefore);

        bool reused = false;
        for (int i = 0; i < 100_000 && !reused; i++)
        {
            void* q = slab.Kmalloc(64);
            Assert.True(q != null);
            held.Add((nint)q);
            reused = q == p;
        }
        Assert.True(reused, "the object never came back after the grace period");
        foreach (nint q in held) slab.Kfree((void*)q);
    }

    [Fact]
    public void SynchronizeRcuWaitsForPreexistingReadersOnly()
    {
        using var sys = NewSystem();
        RcuDomain rcu = sys.Rcu;
        using var oldInside = new ManualResetEventSlim();
        using var oldLeave = new ManualResetEventSlim();
        using var newInside = new ManualResetEventSlim();
        using var newLeave = new ManualResetEventSlim();
        int oldLeft = 0;
        var old = Start(() =>
        {
            rcu.RcuReadLock();
            oldInside.Set();
            oldLeave.Wait();
            Volatile.Write(ref oldLeft, 1);
            rcu.RcuReadUnlock();
        });
        oldInside.Wait();

        int oldLeftWhenDone = -1;
        long gp = rcu.GpSequence;
        var sync = Start(() =>
        {
            rcu.SynchronizeRcu();
            oldLeftWhenDone = Volatile.Read(ref oldLeft);
        });
        // Once the grace period has started, a new reader enters and stays inside until the grace period is over.
        while (rcu.GpSequence == gp) Thread.Sleep(1);
        var late = Start(() =>
        {
            rcu.RcuReadLock();
            newInside.Set();
            newLeave.Wait();
            rcu.RcuReadUnlock();
        });
        newInside.Wait();
        oldLeave.Set();
        Assert.True(sync.Join(TimeSpan.FromSeconds(20)), "synchronize_rcu waited for a reader that began after it");
        Assert.Equal(1, oldLeftWhenDone);
        newLeave.Set();
        old.Join();
        late.Join();
    }

    [Fact]
    public void ReadSectionsNestAndMisuseIsRefused()
    {
        using var sys = NewSystem();
        RcuDomain rcu = sys.Rcu;
        Assert.False(rcu.InReadSection);
        Assert.Throws<InvalidOperationException>(rcu.RcuReadUnlock);
        rcu.RcuReadLock();
        using (rcu.ReadSection())
        {
            Assert.True(rcu.InReadSection);
            Assert.Throws<InvalidOperationException>(rcu.SynchronizeRcu);
            Assert.Throws<InvalidOperationException>(rcu.RcuBarrier);
        }
        Assert.True(rcu.InReadSection);
        rcu.RcuReadUnlock();
        Assert.False(rcu.InReadSection);
        rcu.SynchronizeRcu();
        Assert.Throws<ArgumentException>(() => sys.Slab.KfreeRcu((void*)0x1000));
    }

    [Fact]
    public void CallRcuRunsCallbacksAfterTheGracePeriodAndBarrierWaitsForThem()
    {
        using var sys = NewSystem();
        RcuDomain rcu = sys.Rcu;
        int ran = 0;
        using var inside = new ManualResetEventSlim();
        using var leave = new ManualResetEventSlim();
        var reader = Start(() =>
        {
            rcu.RcuReadLock();
            inside.Set();
            leave.Wait();
            rcu.RcuReadUnlock();
        });
        inside.Wait();
        for (int i = 0; i < 600; i++) rcu.CallRcu(() => Interlocked.Increment(ref ran));
        s_counter = 0;
        for (int i = 0; i < 600; i++) rcu.CallRcu(&CountCallback, 2);
        Thread.Sleep(20);
        Assert.Equal(0, Volatile.Read(ref ran));
        leave.Set();
        reader.Join();
        rcu.RcuBarrier();
        Assert.Equal(600, Volatile.Read(ref ran));
        Assert.Equal(1200, Interlocked.Read(ref s_counter));
    }

    private static long s_counter;

    private static void CountCallback(nint arg) => Interlocked.Add(ref s_counter, arg);

    /// <summary>
    /// Writers replace published objects and kfree_rcu the old ones while readers check every object they reach: with
    /// SLAB_POISON, a freed object reads 0x6b and a reused one a different pattern, so a use after free shows.
    /// </summary>
    [Fact]
    public void ReadersNeverSeeAFreedObjectWhileWritersReplaceThem()
    {
        using var sys = NewSystem(mebibytes: 64, kmallocFlags: SlabFlags.Poison);
        SlabAllocator slab = sys.Slab;
        RcuDomain rcu = sys.Rcu;
        const int Slots = 16, Words = 8;
        var slots = new nint[Slots];
        long seq = 0;
        long* Make()
        {
            long s = Interlocked.Increment(ref seq);
            var o = (long*)slab.Kmalloc(Words * sizeof(long));
            for (int w = 0; w < Words; w++) o[w] = s * 31 + w;
            return o;
        }
        for (int i = 0; i < Slots; i++) slots[i] = (nint)Make();

        long reads = 0, errors = 0, replaced = 0;
        var stop = DateTime.UtcNow + TimeSpan.FromSeconds(1);
        int running = 1;
        var threads = new List<Thread>();
        for (int r = 0; r < 2; r++)
        {
            threads.Add(Start(() =>
            {
                int i = 0;
                while (Volatile.Read(ref running) != 0)
                {
                    rcu.RcuReadLock();
                    var o = (long*)Volatile.Read(ref slots[i++ % Slots]);
                    long s = (o[0]) / 31;
                    bool ok = o[0] % 31 == 0 && s > 0;
                    for (int w = 1; w < Words; w++) ok &= o[w] == s * 31 + w;
                    Thread.SpinWait(20); // stay inside a little while writers replace
                    for (int w = 0; w < Words; w++) ok &= o[w] == s * 31 + w;
                    rcu.RcuReadUnlock();
                    if (!ok) Interlocked.Increment(ref errors);
                    Interlocked.Increment(ref reads);
                }
            }));
        }
        for (int wr = 0; wr < 2; wr++)
        {
            int seed = wr;
            threads.Add(Start(() =>
            {
                var random = new Random(seed);
                while (Volatile.Read(ref running) != 0)
                {
                    long* fresh = Make();
                    nint old = Interlocked.Exchange(ref slots[random.Next(Slots)], (nint)fresh);
                    slab.KfreeRcu((void*)old);
                    Interlocked.Increment(ref replaced);
                    if ((replaced & 1023) == 0) Thread.Yield();
                }
            }));
        }
        while (DateTime.UtcNow < stop) Thread.Sleep(20);
        Volatile.Write(ref running, 0);
        foreach (var t in threads) t.Join();
        rcu.RcuBarrier();
        Assert.True(reads > 0 && replaced > 0, $"reads {reads}, replacements {replaced}");
        Assert.Equal(0, errors);
        foreach (nint o in slots) slab.Kfree((void*)o);
    }

    [Fact]
    public void ReadLockUnlockAndKfreeRcuAllocateNoManagedBytes()
    {
        using var sys = NewUncheckedSystem(mebibytes: 64);
        RcuDomain rcu = sys.Rcu;
        SlabAllocator slab = sys.Slab;
        int failures = 0;
        void Body()
        {
            for (int i = 0; i < 100_000; i++)
            {
                rcu.RcuReadLock();
                rcu.RcuReadLock();
                rcu.RcuReadUnlock();
                rcu.RcuReadUnlock();
            }
            for (int i = 0; i < 20_000; i++)
            {
                void* p = slab.Kmalloc(64);
                if (p == null) { failures++; continue; }
                slab.KfreeRcu(p);
            }
        }
        Body();
        Body();
        long bytes = ManagedBytes.LeastOf(3, Body);
        rcu.RcuBarrier();
        Assert.Equal(0, failures);
        Assert.Equal(0, bytes);
    }

    [Fact]
    public void DisposeRunsQueuedFrees()
    {
        var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        for (int i = 0; i < 1000; i++) sys.Slab.KfreeRcu(sys.Slab.Kmalloc(128));
        sys.Rcu.RcuBarrier();
        AssertBackToBaseline(sys, baseline);
        for (int i = 0; i < 1000; i++) sys.Slab.KfreeRcu(sys.Slab.Kmalloc(128));
        long invoked = sys.Rcu.CallbacksInvoked;
        sys.Dispose(); // the slab layer's dispose runs the queued frees before it closes
        Assert.Equal(invoked + 1000, sys.Rcu.CallbacksInvoked);
    }
}
