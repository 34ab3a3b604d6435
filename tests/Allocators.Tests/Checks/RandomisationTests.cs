using System.Collections.Concurrent;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Tests.Checks;

/// <summary>
/// Slab freelist randomisation (<see cref="CheckedModeOptions.SlabFreelistRandom"/>) and page shuffling
/// (<see cref="CheckedModeOptions.ShufflePages"/>): the next address is not predictable, across caches, systems and
/// reuse, and the allocators' invariants hold; with the modes off the old, predictable order is kept.
/// </summary>
public unsafe class RandomisationTests
{
    private static MemorySystem NewSystem(CheckedModeOptions checks, long size = 64L << 20) => MemInitTests.NewSystem(checks, size);

    /// <summary>The slot indices, in allocation order, of the objects of a new cache's first slab.</summary>
    private static int[] FirstSlabOrder(KmemCache cache)
    {
        int n = cache.ObjectsPerSlab;
        var objs = new nint[n];
        for (int i = 0; i < n; i++) objs[i] = (nint)cache.Alloc();
        nint first = objs.Min();
        Assert.True(objs.Max() - first < (PageFrame.PageSize << cache.Order), "one slab's objects");
        int[] order = objs.Select(p => (int)((p - first) / cache.SlotSize)).ToArray();
        foreach (nint p in objs) cache.Free((void*)p);
        return order;
    }

    [Fact]
    public void NewSlabsHandOutObjectsInADifferentOrderPerCacheAndPerSystem()
    {
        var checks = MemInitTests.Modes(freelistRandom: true);
        using var one = NewSystem(checks);
        using var two = NewSystem(checks);
        int[] a = FirstSlabOrder(one.Slab.CreateCache("random-a", 64, flags: SlabFlags.NoMerge));
        int[] b = FirstSlabOrder(one.Slab.CreateCache("random-b", 64, flags: SlabFlags.NoMerge));
        int[] c = FirstSlabOrder(two.Slab.CreateCache("random-a", 64, flags: SlabFlags.NoMerge));
        int[] ascending = Enumerable.Range(0, a.Length).ToArray();
        Assert.Equal(ascending, a.Order().ToArray()); // every object once
        Assert.NotEqual(ascending, a);
        Assert.NotEqual(a, b);
        Assert.NotEqual(a, c);
        Assert.All(one.Slab.Caches, cache => Assert.Equal(0, cache.CorruptionsFound));
    }

    [Fact]
    public void ModeOffKeepsTheLowestFirstOrderAndPredictableReuse()
    {
        using var system = NewSystem(MemInitTests.AllOff);
        KmemCache cache = system.Slab.CreateCache("ordered", 64, flags: SlabFlags.NoMerge);
        int[] order = FirstSlabOrder(cache);
        Assert.Equal(Enumerable.Range(0, order.Length).ToArray(), order);
        // Reuse is predictable: a second system given the same calls hands out the same slots in the same order.
        using var twin = NewSystem(MemInitTests.AllOff);
        KmemCache twinCache = twin.Slab.CreateCache("ordered", 64, flags: SlabFlags.NoMerge);
        FirstSlabOrder(twinCache);
        Assert.Equal(Offsets(FreeThenReuse(cache, 200, 100)), Offsets(FreeThenReuse(twinCache, 200, 100)));
    }

    /// <summary>The reused objects as offsets from the first object freed.</summary>
    private static long[] Offsets((nint[] Freed, nint[] Again) run) => run.Again.Select(p => (long)(p - run.Freed[0])).ToArray();

    /// <summary>Allocates <paramref name="count"/> objects, frees them in order, then allocates <paramref name="reuse"/> again.</summary>
    private static (nint[] Freed, nint[] Again) FreeThenReuse(KmemCache cache, int count, int reuse)
    {
        var objs = new nint[count];
        for (int i = 0; i < count; i++) objs[i] = (nint)cache.Alloc();
        foreach (nint p in objs) cache.Free((void*)p);
        var again = new nint[reuse];
        for (int i = 0; i < reuse; i++) again[i] = (nint)cache.Alloc();
        foreach (nint p in again) cache.Free((void*)p);
        return (objs, again);
    }

    [Fact]
    public void ReuseAfterFreeIsNotTheLastFreedInReverse()
    {
        using var system = NewSystem(MemInitTests.Modes(freelistRandom: true));
        foreach (int size in new[] { 32, 64, 256 })
        {
            KmemCache cache = system.Slab.CreateCache($"reuse-{size}", size, flags: SlabFlags.NoMerge);
            (nint[] freed, nint[] again) = FreeThenReuse(cache, 200, 100);
            nint[] lastFreedReversed = freed.Reverse().Take(100).ToArray();
            Assert.NotEqual(lastFreedReversed, again);
            // Not merely shifted: most positions differ.
            Assert.True(lastFreedReversed.Zip(again).Count(x => x.First == x.Second) < 20);
        }
        // kmalloc too.
        var ptrs = new nint[200];
        for (int i = 0; i < ptrs.Length; i++) ptrs[i] = (nint)system.Slab.Kmalloc(64);
        foreach (nint p in ptrs) system.Slab.Kfree((void*)p);
        var reused = new nint[100];
        for (int i = 0; i < reused.Length; i++) reused[i] = (nint)system.Slab.Kmalloc(64);
        Assert.True(ptrs.Reverse().Take(100).Zip(reused).Count(x => x.First == x.Second) < 20);
        foreach (nint p in reused) system.Slab.Kfree((void*)p);
    }

    /// <summary>Pfns of the first <paramref name="count"/> max-order blocks a fresh system hands out, then of order-0 pages.</summary>
    private static ulong[] FirstBlocks(MemorySystem system, int count)
    {
        PageAllocator pages = system.Pages;
        var taken = new List<(nint Page, int Order)>();
        var pfns = new List<ulong>();
        for (int i = 0; i < count; i++)
        {
            PageFrame* block = pages.AllocPages(Gfp.Kernel, PageAllocator.MaxOrder);
            Assert.True(block != null);
            pfns.Add(block->Pfn);
            taken.Add(((nint)block, PageAllocator.MaxOrder));
        }
        foreach ((nint page, int order) in taken) pages.FreePages((PageFrame*)page, order);
        pages.CheckConsistency();
        return pfns.ToArray();
    }

    [Fact]
    public void ShuffledSystemsHandOutPagesInDifferentOrders()
    {
        using (var plainA = NewSystem(MemInitTests.AllOff, 128L << 20))
        using (var plainB = NewSystem(MemInitTests.AllOff, 128L << 20))
            Assert.Equal(FirstBlocks(plainA, 6), FirstBlocks(plainB, 6));
        var checks = MemInitTests.Modes(shufflePages: true);
        using var a = NewSystem(checks, 128L << 20);
        using var b = NewSystem(checks, 128L << 20);
        ulong[] first = FirstBlocks(a, 6);
        Assert.NotEqual(first, FirstBlocks(b, 6));
        // Order-0 pages come from a random block too.
        PageFrame* pa = a.Pages.AllocPages(Gfp.Kernel, 0);
        PageFrame* pb = b.Pages.AllocPages(Gfp.Kernel, 0);
        a.Pages.FreePages(pa, 0);
        b.Pages.FreePages(pb, 0);
    }

    [Fact]
    public void ShuffledBuddyKeepsItsInvariantsUnderRandomAllocAndFree()
    {
        using var system = NewSystem(MemInitTests.Modes(shufflePages: true), 64L << 20);
        PageAllocator pages = system.Pages;
        pages.DrainAllPages();
        long free = pages.NrFreePages;
        var rnd = new Random(7);
        var live = new List<(nint Page, int Order)>();
        var seen = new HashSet<ulong>();
        for (int step = 0; step < 4000; step++)
        {
            if (live.Count > 0 && rnd.Next(3) == 0)
            {
                int k = rnd.Next(live.Count);
                pages.FreePages((PageFrame*)live[k].Page, live[k].Order);
                live[k] = live[^1];
                live.RemoveAt(live.Count - 1);
            }
            else
            {
                int order = rnd.Next(3) == 0 ? rnd.Next(4, PageAllocator.MaxOrder + 1) : rnd.Next(0, 4);
                PageFrame* page = pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, order);
                if (page != null) live.Add(((nint)page, order));
            }
            if (step % 500 == 0) pages.CheckConsistency();
        }
        foreach ((nint page, int order) in live) pages.FreePages((PageFrame*)page, order);
        pages.DrainAllPages();
        pages.CheckConsistency();
        Assert.Equal(free, pages.NrFreePages);
        // Every max-order block is free again and none is listed twice.
        PageFrame* block;
        var blocks = new List<nint>();
        while ((block = pages.AllocPages(Gfp.Kernel | Gfp.NoWarn | Gfp.NoRetry, PageAllocator.MaxOrder)) != null)
        {
            Assert.True(seen.Add(block->Pfn));
            blocks.Add((nint)block);
        }
        foreach (nint b in blocks) pages.FreePages((PageFrame*)b, PageAllocator.MaxOrder);
        pages.CheckConsistency();
    }

    /// <summary>
    /// The modes keep the default free semantics: with <see cref="SlabAllocatorOptions.SerializedFrees"/>, two threads
    /// freeing one pointer at once see exactly one success and one refusal, also when init_on_free zeroes the object
    /// first and objects come back in random order.
    /// </summary>
    [Fact]
    public void RacingDoubleFreesAreRefusedWithTheModesOn()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 64L << 20, Checks = MemInitTests.Modes(initOnAlloc: true, initOnFree: true, freelistRandom: true) },
            Slab = new SlabAllocatorOptions { SerializedFrees = true },
        });
        KmemCache cache = system.Slab.CreateCache("race", 64, flags: SlabFlags.NoMerge);
        const int Rounds = 3000;
        var targets = new nint[Rounds];
        for (int i = 0; i < Rounds; i++) targets[i] = (nint)(i % 2 == 0 ? cache.Alloc() : system.Slab.Kmalloc(64));
        (int succeeded, int refused) = Tests.Slab.SlabDoubleFreeTests.RaceDoubleFrees(system.Slab, targets);
        Assert.Equal(Rounds, succeeded);
        Assert.Equal(Rounds, refused);
        system.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
    }

    /// <summary>
    /// Every mode on, four threads allocating kmalloc objects and pages, writing a pattern, handing a third of them to
    /// other threads to check and free: every byte written comes back, every new allocation reads zero, and the free
    /// page count returns to where it started.
    /// </summary>
    [Fact]
    public void AllModesAcrossThreadsWithCrossThreadFrees()
    {
        var checks = MemInitTests.Modes(initOnAlloc: true, initOnFree: true, freelistRandom: true, shufflePages: true);
        using var system = NewSystem(checks, 128L << 20);
        SlabAllocator slab = system.Slab;
        PageAllocator pages = system.Pages;
        pages.DrainAllPages();
        long startFree = pages.NrFreePages;
        var handOff = new ConcurrentQueue<(nint Ptr, int Size, int Order, byte Tag)>();
        const int Threads = 4, Steps = 6000;
        var errors = new ConcurrentQueue<string>();

        void CheckAndFree((nint Ptr, int Size, int Order, byte Tag) item)
        {
            var p = (byte*)item.Ptr;
            int length = item.Order >= 0 ? PageFrame.PageSize << item.Order : item.Size;
            if (new ReadOnlySpan<byte>(p, length).IndexOfAnyExcept(item.Tag) >= 0) errors.Enqueue($"0x{item.Ptr:x} lost its pattern");
            if (item.Order >= 0) pages.FreePages(p, item.Order);
            else slab.Kfree(p);
        }

        void Worker(int id)
        {
            var rnd = new Random(id);
            var mine = new List<(nint Ptr, int Size, int Order, byte Tag)>();
            for (int step = 0; step < Steps; step++)
            {
                int choice = rnd.Next(10);
                if (choice < 4 || mine.Count == 0)
                {
                    bool page = rnd.Next(4) == 0;
                    int order = page ? rnd.Next(0, 4) : -1;
                    int size = page ? PageFrame.PageSize << order : rnd.Next(1, 5000);
                    byte* p = page ? pages.GetFreePages(Gfp.Kernel, order) : (byte*)slab.Kmalloc((nuint)size);
                    if (p == null) { errors.Enqueue("allocation failed"); continue; }
                    if (new ReadOnlySpan<byte>(p, size).IndexOfAnyExcept((byte)0) >= 0) errors.Enqueue($"0x{(nint)p:x} not zero when allocated");
                    byte tag = (byte)rnd.Next(1, 256);
                    new Span<byte>(p, size).Fill(tag);
                    mine.Add(((nint)p, size, order, tag));
                }
                else if (choice < 7)
                {
                    int k = rnd.Next(mine.Count);
                    CheckAndFree(mine[k]);
                    mine[k] = mine[^1];
                    mine.RemoveAt(mine.Count - 1);
                }
                else if (choice < 9)
                {
                    int k = rnd.Next(mine.Count);
                    handOff.Enqueue(mine[k]);
                    mine[k] = mine[^1];
                    mine.RemoveAt(mine.Count - 1);
                }
                else if (handOff.TryDequeue(out var other))
                {
                    CheckAndFree(other);
                }
            }
            foreach (var item in mine) CheckAndFree(item);
        }

        var threads = Enumerable.Range(0, Threads).Select(i => new Thread(() => Worker(i))).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        while (handOff.TryDequeue(out var rest)) CheckAndFree(rest);
        Assert.Empty(errors);

        slab.ShrinkAll();
        pages.DrainAllPages();
        pages.CheckConsistency();
        Assert.Equal(startFree, pages.NrFreePages);
        Assert.All(slab.Caches, cache => Assert.Equal(0, cache.CorruptionsFound));
    }
}
