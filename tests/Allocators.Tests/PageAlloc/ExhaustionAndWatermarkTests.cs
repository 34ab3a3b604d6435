using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>Running memory out: exact failure points at the watermarks, reserves, and a clean return to the boot state.</summary>
public sealed unsafe class ExhaustionAndWatermarkTests
{
    private static void FreeAllShuffled(PageAllocator pa, List<nint> pages, int order, int seed)
    {
        Shuffle(pages, new Random(seed));
        foreach (nint p in pages) pa.FreePages((PageFrame*)p, order);
        pages.Clear();
    }

    [Theory]
    [InlineData(16)]
    [InlineData(64)]
    public void Order0ExhaustionThenShuffledFreeRestoresBuddyInfo(int sizeMiB)
    {
        int warnings = 0;
        using var sys = NewSystem(sizeMiB, warn: _ => warnings++);
        PageAllocator pa = sys.Pages;
        string initial = pa.BuddyInfo();
        long alloc0 = pa.PagesAllocated, freed0 = pa.PagesFreed;

        var pages = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.NoWarn);

        // GFP_KERNEL stops exactly when every zone is down to its min watermark plus its lowmem reserve against Normal.
        long expected = pa.Zones.Where(z => z.Populated).Sum(z => z.ManagedPages - z.WatermarkMin - z.LowmemReserve(ZoneType.Normal));
        Assert.Equal(expected, pages.Count);
        Assert.Equal(1, pa.AllocFailures);
        Assert.Equal(0, pa.Warnings);
        Assert.Equal(0, warnings);
        Assert.Equal(pages.Count, pages.Select(p => ((PageFrame*)p)->Pfn).Distinct().Count());
        Assert.Equal(pages.Count, pa.PagesAllocated - alloc0);

        FreeAllShuffled(pa, pages, 0, seed: sizeMiB);
        Assert.Equal(expected, pa.PagesFreed - freed0);
        pa.DrainAllPages();
        Assert.Equal(initial, pa.BuddyInfo());
        Assert.Equal(pa.ManagedPages, pa.NrFreePages);
    }

    [Fact]
    public void MixedOrderExhaustionRestoresBuddyInfo()
    {
        using var sys = NewSystem(32);
        PageAllocator pa = sys.Pages;
        string initial = pa.BuddyInfo();
        var random = new Random(42);
        var blocks = new List<(nint Page, int Order)>();
        int failuresInARow = 0;
        while (failuresInARow < 20)
        {
            int order = random.Next(0, 11);
            PageFrame* page = pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, order);
            if (page == null) { failuresInARow++; continue; }
            failuresInARow = 0;
            Assert.Equal(0UL, page->Pfn & ((1UL << order) - 1));
            blocks.Add(((nint)page, order));
        }
        foreach (Zone z in pa.Zones.Where(z => z.Populated))
            Assert.True(z.FreePages + pa.PcpPages <= z.WatermarkMin + 1023, "the arena should be nearly exhausted");

        Shuffle(blocks, random);
        foreach (var (page, order) in blocks) pa.FreePages((PageFrame*)page, order);
        pa.DrainAllPages();
        Assert.Equal(initial, pa.BuddyInfo());
    }

    [Fact]
    public void KernelStopsAtMinAtomicDigsDeeperMemAllocTakesTheRest()
    {
        // 64 MiB: DMA 1024 pages, DMA32 4096, Normal 11264; min_free_kbytes 1024 -> 256 pages split by size.
        using var sys = NewSystem(64);
        PageAllocator pa = sys.Pages;
        string initial = pa.BuddyInfo();
        Zone[] zones = pa.Zones.Where(z => z.Populated).ToArray();
        Assert.Equal(3, zones.Length);
        Assert.Equal(new long[] { 16, 64, 176 }, zones.Select(z => z.WatermarkMin));
        // lowmem_reserve against a GFP_KERNEL allocation: (DMA32 + Normal) / 256 and Normal / 256.
        long[] reserve = zones.Select(z => z.LowmemReserve(ZoneType.Normal)).ToArray();
        Assert.Equal(new long[] { 60, 44, 0 }, reserve);

        var kernel = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.NoWarn);
        Assert.Equal(0, pa.PcpPages);
        foreach (Zone z in zones) Assert.Equal(z.WatermarkMin + z.LowmemReserve(ZoneType.Normal), z.FreePages);
        Assert.Equal(16384 - 256 - 104, kernel.Count);

        // A second GFP_KERNEL attempt still fails: nothing was freed.
        Assert.True(pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, 0) == null);

        // GFP_ATOMIC (__GFP_HIGH, cannot block): min - min/2, then a further quarter of that.
        var atomic = AllocateUntilFailure(pa, Gfp.Atomic | Gfp.NoWarn);
        long[] atomicMark = zones.Select(z => AdjustedMin(z, Gfp.Atomic)).ToArray();
        Assert.Equal(new long[] { 6, 24, 66 }, atomicMark);
        for (int i = 0; i < zones.Length; i++) Assert.Equal(atomicMark[i] + reserve[i], zones[i].FreePages);
        Assert.Equal(256 - atomicMark.Sum(), atomic.Count);

        // __GFP_NOMEMALLOC forbids the emergency reserve even with __GFP_MEMALLOC.
        Assert.True(pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoMemAlloc | Gfp.NoWarn, 0) == null);

        var memalloc = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn);
        Assert.Equal(atomicMark.Sum() + reserve.Sum(), memalloc.Count); // no watermark, no reserve
        Assert.Equal(0, pa.NrFreePages);
        Assert.Equal(0, pa.PcpPages);

        Assert.All(kernel, p => Assert.False(((PageFrame*)p)->Has(PageFlags.PfMemAlloc)));
        Assert.All(atomic, p => Assert.False(((PageFrame*)p)->Has(PageFlags.PfMemAlloc)));
        Assert.All(memalloc, p => Assert.True(((PageFrame*)p)->Has(PageFlags.PfMemAlloc)));

        var all = kernel.Concat(atomic).Concat(memalloc).ToList();
        Assert.Equal(16384, all.Select(p => ((PageFrame*)p)->Pfn).Distinct().Count());
        FreeAllShuffled(pa, all, 0, seed: 7);
        pa.DrainAllPages();
        Assert.Equal(initial, pa.BuddyInfo());

        // The pfmemalloc mark does not survive the free: the same pages come back clean.
        var again = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.NoWarn);
        Assert.All(again, p => Assert.False(((PageFrame*)p)->Has(PageFlags.PfMemAlloc)));
        FreeAllShuffled(pa, again, 0, seed: 8);
    }

    [Fact]
    public void HighThatMayBlockGetsHalfTheReserveOnly()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.Equal(128, normal.WatermarkMin);

        var kernel = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.NoWarn);
        Assert.Equal(4096 - 128, kernel.Count);
        var high = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.High | Gfp.NoWarn);
        Assert.Equal(64, high.Count);             // down to min/2 = 64
        Assert.Equal(64, normal.FreePages);
        var atomic = AllocateUntilFailure(pa, Gfp.Atomic | Gfp.NoWarn);
        Assert.Equal(64 - 48, atomic.Count);      // down to 64 - 64/4 = 48
        Assert.Equal(48, normal.FreePages);
        var nowait = AllocateUntilFailure(pa, Gfp.NoWait | Gfp.NoWarn);
        Assert.Empty(nowait);                     // GFP_NOWAIT has no reserve at all

        FreeAllShuffled(pa, kernel.Concat(high).Concat(atomic).ToList(), 0, seed: 3);
    }

    [Fact]
    public void HigherOrderNeedsTheWatermarkPlusTheBlockSize()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        // Four order-10 blocks; min 128: the fourth would leave free - 1023 = 1 <= 128.
        var blocks = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.NoWarn, order: 10);
        Assert.Equal(3, blocks.Count);
        Assert.Equal(1, normal.FreeBlocks(10));

        // Order 9 passes the count check (1024 - 511 > 128) and splits the last block.
        PageFrame* half = pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, 9);
        Assert.True(half != null);
        Assert.Equal(1, normal.FreeBlocks(9));
        Assert.Equal(0, normal.FreeBlocks(10));
        // Another order 9: 512 - 511 = 1 <= 128, fails although a block of 512 pages exists.
        Assert.True(pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, 9) == null);
        Assert.Equal(1, normal.FreeBlocks(9));
        // MemAlloc ignores the marks.
        PageFrame* reserve = pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn, 9);
        Assert.True(reserve != null);
        Assert.True(reserve->Has(PageFlags.PfMemAlloc));

        pa.FreePages(reserve, 9);
        pa.FreePages(half, 9);
        foreach (nint b in blocks) pa.FreePages((PageFrame*)b, 10);
        Assert.Equal(4, normal.FreeBlocks(10));
    }

    [Fact]
    public void WatermarksFollowTheKernelFormula()
    {
        using var sys64 = NewSystem(64);
        PageAllocator pa = sys64.Pages;
        Assert.Equal(1024, pa.MinFreeKbytes);
        Assert.Equal(ExpectedMinFreeKbytes(pa.ManagedPages), pa.MinFreeKbytes);
        foreach (Zone z in pa.Zones.Where(z => z.Populated))
        {
            var (min, low, high) = ExpectedWatermarks(z.ManagedPages, pa.ManagedPages);
            Assert.Equal(min, z.WatermarkMin);
            Assert.Equal(low, z.WatermarkLow);
            Assert.Equal(high, z.WatermarkHigh);
        }
        Assert.Equal((16L, 20L, 24L), (pa.GetZone(0, ZoneType.Dma).WatermarkMin, pa.GetZone(0, ZoneType.Dma).WatermarkLow, pa.GetZone(0, ZoneType.Dma).WatermarkHigh));
        Assert.Equal((176L, 220L, 264L), (pa.GetZone(0, ZoneType.Normal).WatermarkMin, pa.GetZone(0, ZoneType.Normal).WatermarkLow, pa.GetZone(0, ZoneType.Normal).WatermarkHigh));

        using var tuned = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow },
            PageAllocator = new PageAllocatorOptions { MinFreeKbytes = 2048 },
        });
        Assert.Equal(2048, tuned.Pages.MinFreeKbytes);
        Assert.Equal(512, tuned.Pages.GetZone(0, ZoneType.Normal).WatermarkMin);
        Assert.Equal(512 + 128, tuned.Pages.GetZone(0, ZoneType.Normal).WatermarkLow);
    }

    [Fact]
    public void NoFailAboveOrder1WarnsOnceAndAboveMaxOrderIsRefused()
    {
        var warnings = new List<string>();
        using var sys = NewSystem(32, warn: warnings.Add);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        PageFrame* a = pa.AllocPages(Gfp.Kernel | Gfp.NoFail, 3);
        PageFrame* b = pa.AllocPages(Gfp.Kernel | Gfp.NoFail, 4);
        Assert.True(a != null && b != null);
        var warning = Assert.Single(warnings); // WARN_ON_ONCE
        Assert.Contains("__GFP_NOFAIL with order 3 > 1", warning);
        Assert.Equal(1, pa.Warnings);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => pa.AllocPages(Gfp.Kernel | Gfp.NoFail, PageAllocator.MaxOrder + 1));
        Assert.Contains("can never succeed", e.Message);
        pa.FreePages(a, 3);
        pa.FreePages(b, 4);
        pa.DrainAllPages();
        Assert.Equal(boot, pa.BuddyInfo());
    }

    [Fact]
    public void RejectedConfigurationTakesNoRegistrySlot()
    {
        using var memory = new PhysicalMemory(new PhysicalMemoryOptions { Size = 16L << 20, DmaZoneSize = 12L << 20, Dma32ZoneSize = 12L << 20 });
        // Other test classes create and dispose registries in parallel, so the count moves a little on its own; a
        // rejected constructor that kept its slot would add one per attempt.
        int before = Allocators.Threading.ThreadCacheRegistry.SlotsInUse;
        for (int i = 0; i < 200; i++) Assert.Throws<ArgumentException>(() => new PageAllocator(memory));
        Assert.InRange(Allocators.Threading.ThreadCacheRegistry.SlotsInUse - before, int.MinValue, 99);
    }

    [Fact]
    public void NoFailWaitsForFreedPagesInsteadOfFailing()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        var all = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn);
        Assert.Equal(0, pa.NrFreePages);
        long failures = pa.AllocFailures;

        nint result = 0;
        var waiter = new Thread(() => result = (nint)pa.AllocPages(Gfp.Kernel | Gfp.NoFail, 0));
        waiter.Start();
        Assert.False(waiter.Join(100), "__GFP_NOFAIL must wait while memory is exhausted, not fail");

        // More than the waiter needs (it may take any free page once reclaim has failed), as a burst of frees would be.
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        int toFree = (int)(normal.WatermarkMin - normal.WatermarkMin / 2) + 8;
        for (int i = 0; i < toFree; i++)
        {
            pa.FreePages((PageFrame*)all[^1], 0);
            all.RemoveAt(all.Count - 1);
        }
        bool finished = waiter.Join(TimeSpan.FromSeconds(10));
        if (!finished)
        {
            foreach (nint p in all) pa.FreePages((PageFrame*)p, 0);   // unblock it before failing
            waiter.Join();
            Assert.Fail("__GFP_NOFAIL allocation did not complete after pages were freed");
        }
        AssertWaitedNoFailSucceeded(pa, result, failures, all);
    }

    [Fact]
    public void ZoneModifierForAnUnpopulatedZoneFails()
    {
        // 16 MiB has no DMA or DMA32 zone: such requests fail (and do not take Normal pages), before and after the
        // thread has per-thread lists.
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        Assert.False(pa.GetZone(0, ZoneType.Dma).Populated);
        Assert.True(pa.AllocPages(Gfp.KernelDma | Gfp.NoWarn, 0) == null);
        PageFrame* warm = pa.AllocPages(Gfp.Kernel, 0);
        pa.FreePages(warm, 0);
        FreeListState before = Snapshot(pa);
        Assert.True(pa.AllocPages(Gfp.KernelDma | Gfp.NoWarn, 0) == null);
        Assert.True(pa.AllocPages(Gfp.KernelDma32 | Gfp.NoWarn, 2) == null);
        Assert.True(pa.AllocPages(Gfp.Kernel | Gfp.Dma32 | Gfp.MemAlloc | Gfp.NoWarn, 0) == null);
        Assert.Equal(4, pa.AllocFailures);
        Assert.Equal(before.PagesAllocated, pa.PagesAllocated);
        Assert.Equal(before.NrFreePages + before.PcpPages, pa.NrFreePages + pa.PcpPages);
    }
}
