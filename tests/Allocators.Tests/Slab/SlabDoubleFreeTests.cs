using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Double frees in any order, on any thread, wherever the first free put the object (the thread's list, its slab's
/// list, a remote list, a slab on the node): refused by default with nothing changed; with
/// <see cref="SlabAllocatorOptions.SerializedFrees"/> also when two threads free one pointer at the same instant.
/// Also krealloc and ksize of a freed pointer.
/// </summary>
public unsafe class SlabDoubleFreeTests
{
    /// <summary>Everything a refused free must leave as it was.</summary>
    private sealed record Books(string SlabInfo, string BuddyInfo, KmemCacheStats[] Stats)
    {
        public static Books Take(MemorySystem sys) => new(sys.Slab.SlabInfo(), sys.Pages.BuddyInfo(), sys.Slab.Caches.Select(c => c.Stats).ToArray());
    }

    private static void Refused(MemorySystem sys, void* p, Action free)
    {
        var before = Books.Take(sys);
        var ex = Assert.ThrowsAny<MemoryCorruptionException>(free);
        Assert.Contains(Hex(p), ex.Message);
        var after = Books.Take(sys);
        Assert.Equal(before.SlabInfo, after.SlabInfo);
        Assert.Equal(before.BuddyInfo, after.BuddyInfo);
        Assert.Equal(before.Stats, after.Stats);
    }

    [Fact]
    public void ADoubleFreeThatIsNotTheLastFreeIsRefused()
    {
        // The repro: a, b, free a, free b, free a again.
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        void* a = sys.Slab.Kmalloc(64);
        void* b = sys.Slab.Kmalloc(64);
        sys.Slab.Kfree(a);
        sys.Slab.Kfree(b);
        Refused(sys, a, () => sys.Slab.Kfree(a));
        void* x = sys.Slab.Kmalloc(64), y = sys.Slab.Kmalloc(64), z = sys.Slab.Kmalloc(64);
        Assert.Equal(3, new HashSet<nint> { (nint)x, (nint)y, (nint)z }.Count);
        sys.Slab.Kfree(x);
        sys.Slab.Kfree(y);
        sys.Slab.Kfree(z);

        var cache = sys.Slab.CreateCache("df-order", 48);
        var typed = sys.Slab.CreateCache<Node16>("df-typed");
        void* c1 = cache.Alloc(), c2 = cache.Alloc();
        Node16* t1 = typed.Alloc(), t2 = typed.Alloc();
        cache.Free(c1);
        cache.Free(c2);
        typed.Free(t1);
        typed.Free(t2);
        Refused(sys, c1, () => cache.Free(c1));
        Refused(sys, t1, () => typed.Free(t1));
        Refused(sys, c1, () => sys.Slab.Kfree(c1));
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Equal(0, typed.Cache.ActiveObjects);
        Assert.Empty(cache.Validate());
        typed.Dispose();
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(64)]
    [InlineData(700)]
    [InlineData(20000)]
    public void EveryObjectFreedTwiceInRandomOrderIsRefusedOnce(int size)
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache($"df-random-{size}", size);
        var rnd = new Random(size);
        var objects = Enumerable.Range(0, 3 * cache.ObjectsPerSlab + 5).Select(_ => (nint)cache.Alloc()).ToArray();
        var order = objects.OrderBy(_ => rnd.Next()).ToArray();
        // Free half, shrink (some objects move from the thread to their slabs and nodes), free the rest, then every one again.
        for (int i = 0; i < order.Length; i++)
        {
            cache.Free((void*)order[i]);
            if (i == order.Length / 2) cache.Shrink();
        }
        foreach (nint p in order.OrderBy(_ => rnd.Next()))
            Refused(sys, (void*)p, () => cache.Free((void*)p));
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ASecondFreeOnAnotherThreadIsRefusedWhereverTheFirstPutTheObject()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("df-threads", 64);
        var objects = Enumerable.Range(0, 200).Select(_ => (nint)cache.Alloc()).ToArray();
        // The first free on a worker: some land on its remote lists or claimed slabs.
        RunOnNewThread(() =>
        {
            foreach (nint p in objects) cache.Free((void*)p);
        });
        // The exited worker's caches go home now: a finalizer retiring them between two of Refused's snapshots (after
        // another test's GC) would change the books. The scan runs at most once per clock tick.
        for (int i = 0; i < 50 && !SlabCpus.RetireExited(); i++) Thread.Sleep(2);
        foreach (nint p in objects) Refused(sys, (void*)p, () => cache.Free((void*)p));
        RunOnNewThread(() =>
        {
            foreach (nint p in objects) Assert.ThrowsAny<MemoryCorruptionException>(() => cache.Free((void*)p));
        });
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    /// <summary>
    /// Two threads kfree each of <paramref name="targets"/> at once: both spin until the other reached the same round,
    /// then free that round's pointer, so the frees overlap within a few hundred nanoseconds, often closer.
    /// </summary>
    internal static (int Succeeded, int Refused) RaceDoubleFrees(SlabAllocator slab, nint[] targets)
    {
        int succeeded = 0, refused = 0;
        var arrived = new int[2 * 16];
        void Racer(int me)
        {
            for (int r = 0; r < targets.Length; r++)
            {
                Volatile.Write(ref arrived[me * 16], r + 1);
                while (Volatile.Read(ref arrived[(1 - me) * 16]) < r + 1) { }
                try
                {
                    slab.Kfree((void*)targets[r]);
                    Interlocked.Increment(ref succeeded);
                }
                catch (MemoryCorruptionException)
                {
                    Interlocked.Increment(ref refused);
                }
            }
        }
        var other = new Thread(() => Racer(1));
        other.Start();
        Racer(0);
        other.Join();
        return (succeeded, refused);
    }

    [Fact]
    public void TwoThreadsFreeingOnePointerAtOnceWithSerializedFreesExactlyOneSucceeds()
    {
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new Physical.PhysicalMemoryOptions { Size = 32 << 20 },
            Slab = new SlabAllocatorOptions { SerializedFrees = true },
        });
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("df-race", 64);
        const int Rounds = 20000;
        var targets = new nint[Rounds];
        for (int i = 0; i < Rounds; i++) targets[i] = (nint)(i % 2 == 0 ? cache.Alloc() : sys.Slab.Kmalloc(64));
        (int succeeded, int refused) = RaceDoubleFrees(sys.Slab, targets);
        Assert.Equal(Rounds, succeeded);
        Assert.Equal(Rounds, refused);
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Equal(0, sys.Slab.KmallocCache(64)!.ActiveObjects);
        Assert.Empty(cache.Validate());
        Assert.Empty(sys.Slab.KmallocCache(64)!.Validate());
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KreallocAndKsizeOfAFreedPointerAreRefusedAndLeakNothing()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        void* p = sys.Slab.Kmalloc(64);
        void* keep = sys.Slab.Kmalloc(64);
        sys.Slab.Kfree(p);
        Refused(sys, p, () => sys.Slab.Krealloc(p, 32));
        Refused(sys, p, () => sys.Slab.Krealloc(p, 1000));
        Refused(sys, p, () => sys.Slab.Ksize(p));
        void* q = sys.Slab.Kmalloc(64);
        void* r = sys.Slab.Kmalloc(64);
        Assert.True(q != r);
        sys.Slab.Kfree(q);
        sys.Slab.Kfree(r);
        sys.Slab.Kfree(keep);
        sys.Slab.ShrinkAll();
        foreach (var c in sys.Slab.KmallocCaches) Assert.Equal(0, c.ActiveObjects);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KreallocOfAFreedPointerOfADebugCacheIsRefusedBeforeItWritesAnything()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        string baseline = Baseline(sys);
        byte* p = (byte*)sys.Slab.Kmalloc(64);
        sys.Slab.Kfree(p);
        var poisoned = new ReadOnlySpan<byte>(p, 64).ToArray();
        Refused(sys, p, () => sys.Slab.Krealloc(p, 32));
        Refused(sys, p, () => sys.Slab.Krealloc(p, 1000));
        Assert.Equal(poisoned, new ReadOnlySpan<byte>(p, 64).ToArray());
        foreach (var c in sys.Slab.KmallocCaches)
        {
            Assert.Empty(c.Validate());
            Assert.Empty(c.Reports);
        }
        AssertBackToBaseline(sys, baseline);
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential, Size = 16)]
    private struct Node16;
}
