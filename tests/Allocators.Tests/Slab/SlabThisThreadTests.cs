using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// The per-thread handles <see cref="KmemCache.ThisThread"/>, <see cref="KmemCache{T}.ThisThread"/> and
/// <see cref="SlabAllocator.ThisThread"/>: the same results, checks and accounting as the plain calls, no managed
/// bytes, and safe against drains from other threads.
/// </summary>
public unsafe class SlabThisThreadTests
{
    private struct Node
    {
        public long Key;
        public long Value;
    }

    private static long AllocatedBytes(Action body)
    {
        body();
        body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        body();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    [Fact]
    public void HandlesAllocateNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        var cache = sys.Slab.CreateCache("handle-64", 64);
        var typed = sys.Slab.CreateCache<Node>();
        var slab = sys.Slab;
        var keep = new nint[300];
        long bytes = AllocatedBytes(() =>
        {
            var c = cache.ThisThread();
            var t = typed.ThisThread();
            var k = slab.ThisThread();
            for (int i = 0; i < 20_000; i++)
            {
                c.Free(c.Alloc());
                t.Free(t.Alloc());
                k.Kfree(k.Kmalloc((nuint)(1 + i % 8192)));
            }
            // Batches that overflow the magazines into the depot and the slabs.
            for (int i = 0; i < keep.Length; i++) keep[i] = (nint)c.Alloc();
            for (int i = keep.Length - 1; i >= 0; i--) c.Free((void*)keep[i]);
        });
        Assert.Equal(0, bytes);
    }

    [Fact]
    public void EverythingGoesBackAndCountsMatchThePlainCalls()
    {
        using var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("handle-96", 96);
        var objects = new List<nint>();
        var c = cache.ThisThread();
        for (int i = 0; i < 5000; i++) objects.Add((nint)c.Alloc());
        Assert.Equal(5000, objects.Distinct().Count());
        Assert.InRange(cache.ActiveObjects, 5000, 5000 + 2 * 128); // plus what the magazines hold
        Assert.All(objects, p => Assert.True(cache.Owns((void*)p)));
        // Half freed through the handle, half through the plain call: the same objects, the same books.
        for (int i = 0; i < objects.Count; i++)
        {
            if (i % 2 == 0) c.Free((void*)objects[i]);
            else cache.Free((void*)objects[i]);
        }
        cache.Shrink(); // objects parked in magazines count as active until then
        Assert.Equal(0, cache.ActiveObjects);
        var stats = cache.Stats;
        Assert.Equal(5000, stats.AllocFastPath + stats.AllocSlowPath);
        Assert.Equal(5000, stats.FreeFastPath + stats.FreeSlowPath);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KmallocHandleServesEverySizeLikeKmalloc()
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var k = sys.Slab.ThisThread();
        var sizes = new nuint[] { 1, 8, 9, 64, 96, 100, 192, 193, 4096, 8192, 8193, 100_000 };
        var blocks = new List<(nint P, nuint Size)>();
        foreach (nuint size in sizes)
        {
            byte* p = (byte*)k.Kmalloc(size);
            Assert.True(p != null);
            Assert.True(sys.Slab.Ksize(p) >= size);
            new Span<byte>(p, (int)size).Fill(0xAB);
            blocks.Add(((nint)p, size));
        }
        byte* zeroed = (byte*)k.Kmalloc(200, Gfp.Kernel | Gfp.Zero);
        Assert.True(new Span<byte>(zeroed, 200).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(k.Kmalloc(0) == SlabAllocator.ZeroSizePointer);
        k.Kfree(SlabAllocator.ZeroSizePointer);
        k.Kfree(null);
        k.Kfree(zeroed);
        // An object of a non-kmalloc cache may be given to kfree too, as in the kernel.
        var other = sys.Slab.CreateCache("handle-other", 40);
        k.Kfree(other.Alloc());
        other.Shrink();
        Assert.Equal(0, other.ActiveObjects);
        foreach (var (p, _) in blocks) k.Kfree((void*)p);
        other.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(32769)]   // order 4
    [InlineData(100_000)] // order 5
    public void ALargeKmallocThroughTheHandleRefusesBadFreesAndChangesNothing(int size)
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var k = sys.Slab.ThisThread();
        byte* p = (byte*)k.Kmalloc((nuint)size);
        PageFrame* head = sys.Pages.Memory.VirtToPage(p);
        int order = head->Order;
        Assert.True(head->Has(PageFlags.LargeKmalloc) && head->Has(PageFlags.Head));

        var interior = Assert.Throws<BadPageException>(() => sys.Slab.ThisThread().Kfree(p + 4096));
        Assert.Contains("interior pointer", interior.Message);

        // A stray write into the last tail's compound_head: the free is refused before anything changes, the tails
        // before it included (the handle checks and clears them in one pass).
        PageFrame* last = head + (1 << order) - 1;
        nuint saved = last->Private;
        last->Private = 0;
        string buddyinfo = sys.Pages.BuddyInfo();
        var corrupted = Assert.Throws<BadPageException>(() => sys.Slab.ThisThread().Kfree(p));
        Assert.Contains($"0x{last->Pfn:x}", corrupted.Message);
        Assert.Contains($"kfree: 0x{(nuint)p:x}", corrupted.Message);
        Assert.True(head->Has(PageFlags.LargeKmalloc) && head->Has(PageFlags.Head) && head->Has(PageFlags.Allocated));
        for (int i = 1; i < (1 << order) - 1; i++)
            Assert.True((head + i)->Has(PageFlags.Tail) && (head + i)->Private == (nuint)head, $"tail {i}");
        Assert.Equal(buddyinfo, sys.Pages.BuddyInfo());
        Assert.Equal((nuint)(4096 << order), sys.Slab.Ksize(p));

        last->Private = saved;
        k.Kfree(p);
        Assert.Throws<BadPageException>(() => sys.Slab.ThisThread().Kfree(p)); // freed already
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ARefusedKfreeThroughTheHandleDoesNotEvenRegisterTheThread()
    {
        using var sys = NewUncheckedSystem();
        byte* outside = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc(64);
        try
        {
            int threadsBefore = 0, threadsAfter = 0;
            Exception? refused = null;
            var worker = new Thread(() =>
            {
                threadsBefore = sys.Pages.PcpThreadCount;
                refused = Record.Exception(() => sys.Slab.ThisThread().Kfree(outside));
                threadsAfter = sys.Pages.PcpThreadCount;
            });
            worker.Start();
            worker.Join();
            Assert.IsType<MemoryCorruptionException>(refused);
            Assert.Contains($"0x{(nuint)outside:x}", refused!.Message);
            Assert.Equal(threadsBefore, threadsAfter); // the thread's page lists were not created for a free that changes nothing
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(outside);
        }
    }

    [Fact]
    public void LargeKmallocThroughTheHandleAllocatesNoManagedBytes()
    {
        using var sys = NewUncheckedSystem(64);
        SlabAllocator slab = sys.Slab;
        var sizes = new nuint[] { 8193, 12_000, 16_384, 20_000, 32_768 };
        void Loop()
        {
            var k = slab.ThisThread();
            for (int i = 0; i < 20_000; i++)
            {
                void* p = k.Kmalloc(sizes[i % sizes.Length]);
                *(long*)p = i;
                k.Kfree(p);
            }
        }
        Loop();
        Loop();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Loop();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void MisuseThroughAHandleIsRejectedAndChangesNothing()
    {
        using var sys = NewUncheckedSystem();
        var cache = sys.Slab.CreateCache("handle-misuse", 64);
        var other = sys.Slab.CreateCache("handle-misuse-other", 64);
        void* mine = cache.Alloc();
        void* foreign = other.Alloc();
        void* freed = cache.Alloc();
        cache.ThisThread().Free(freed);
        string slabinfo = sys.Slab.SlabInfo();
        long active = cache.ActiveObjects;

        var wrong = Assert.Throws<MemoryCorruptionException>(() => cache.ThisThread().Free(foreign));
        Assert.Contains(Hex(foreign), wrong.Message);
        Assert.Contains("wrong cache", wrong.Message);
        var interior = Assert.Throws<MemoryCorruptionException>(() => cache.ThisThread().Free((byte*)mine + 8));
        Assert.Contains("interior pointer", interior.Message);
        var twice = Assert.Throws<MemoryCorruptionException>(() => cache.ThisThread().Free(freed));
        Assert.Contains("double free", twice.Message);
        byte* stack = stackalloc byte[16];
        nint stackAddress = (nint)stack;
        Assert.Throws<MemoryCorruptionException>(() => sys.Slab.ThisThread().Kfree((void*)stackAddress));
        Assert.Throws<MemoryCorruptionException>(() => sys.Slab.ThisThread().Kfree((byte*)mine + 8));

        Assert.Equal(slabinfo, sys.Slab.SlabInfo());
        Assert.Equal(active, cache.ActiveObjects);
        cache.Free(mine);
        other.Free(foreign);
    }

    [Fact]
    public void FailslabAndDebugCachesGoThroughThePlainPaths()
    {
        using var sys = NewUncheckedSystem();
        var debug = sys.Slab.CreateCache("handle-debug", 48, flags: SlabFlags.Debug);
        var d = debug.ThisThread();
        byte* p = (byte*)d.Alloc();
        Assert.Equal(0x5a, p[0]); // SLUB's uninitialised-object poison: the debug slow path served it
        d.Free(p);
        Assert.Equal(0x6b, p[0]);  // and freed it (poisoned free object)
        Assert.Empty(debug.Validate());

        var plain = sys.Slab.CreateCache("handle-failslab", 48);
        var h = plain.ThisThread();
        h.Free(h.Alloc()); // magazines loaded
        sys.Slab.Failslab.Probability = 100;
        sys.Slab.Failslab.Times = -1;
        try
        {
            var again = plain.ThisThread();
            Assert.True(again.Alloc() == null);
            Assert.True(sys.Slab.ThisThread().Kmalloc(64) == null);
        }
        finally
        {
            sys.Slab.Failslab.Probability = 0;
        }
        Assert.True(sys.Slab.Failslab.Injected >= 2);
        debug.Destroy();
    }

    [Fact]
    public void DrainsFromAnotherThreadWhileAHandleRunsLoseNothing()
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache("handle-drain", 128);
        using var stop = new CancellationTokenSource();
        long pairs = 0;
        var worker = new Thread(() =>
        {
            var h = cache.ThisThread();
            var held = new nint[64];
            var rnd = new Random(1);
            while (!stop.IsCancellationRequested)
            {
                int n = rnd.Next(1, held.Length);
                for (int i = 0; i < n; i++) held[i] = (nint)h.Alloc();
                for (int i = 0; i < n; i++) h.Free((void*)held[i]);
                pairs += n;
            }
        });
        worker.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int drains = 0;
        while (clock.ElapsedMilliseconds < 700 || drains < 50)
        {
            cache.Shrink();          // drains every thread's magazines
            sys.Pages.DrainAllPages();
            drains++;
        }
        stop.Cancel();
        worker.Join();
        Assert.True(pairs > 0);
        cache.Shrink();
        Assert.Equal(0, cache.ActiveObjects);
        var stats = cache.Stats;
        Assert.Equal(stats.AllocFastPath + stats.AllocSlowPath, stats.FreeFastPath + stats.FreeSlowPath);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ObjectsCrossThreadsBetweenHandles()
    {
        using var sys = NewUncheckedSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache<Node>("handle-cross");
        const int PerThread = 20_000;
        var queues = new Allocators.Tests.Threading.HandOffQueue<nint>[2];
        for (int i = 0; i < 2; i++) queues[i] = new(capacity: 1024);
        var threads = Enumerable.Range(0, 2).Select(id => new Thread(() =>
        {
            var h = cache.ThisThread();
            var k = sys.Slab.ThisThread();
            for (int i = 0; i < PerThread; i++)
            {
                Node* n = h.Alloc();
                n->Key = i;
                n->Value = -i;
                queues[1 - id].Add((nint)n);
                k.Kfree(k.Kmalloc((nuint)(i % 500 + 1)));
                if (queues[id].TryTake(out nint theirs)) h.Free((Node*)theirs);
            }
            queues[1 - id].CompleteAdding();
            foreach (nint theirs in queues[id].GetConsumingEnumerable()) h.Free((Node*)theirs);
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        cache.Cache.Shrink();
        Assert.Equal(0, cache.Cache.ActiveObjects);
        cache.Dispose();
        AssertBackToBaseline(sys, baseline);
    }
}
