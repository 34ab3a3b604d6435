using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.PageAlloc;

/// <summary>Shared helpers for the page allocator tests: small systems, state snapshots, block stamps, watermark maths.</summary>
/// <remarks>
/// The systems have every checked mode off, whatever ALLOCATORS_CHECKS says: these tests check the allocator's own
/// contract (a freed block is free at once, the per-thread lists' order, exact counts), which KASAN's quarantine and
/// the other modes change on purpose; Kasan/ and Checks/ test the modes. All their memory is low whatever
/// ALLOCATORS_HIGHMEM says: they count the pages and lines of the x86-64 zone layout, and a split moves pages into
/// HighMem zones that kernel allocations may not use; Highmem/ tests the split's zones.
/// </remarks>
internal static unsafe class PageTestKit
{
    public const long MiB = 1L << 20;

    /// <summary>
    /// A small flat single-node system (default 16 MiB: one Normal zone, no DMA zones). Free page reporting runs in
    /// the freeing thread unless <paramref name="reportingDelay"/> is given, so tests see its effect at once.
    /// </summary>
    public static MemorySystem NewSystem(long sizeMiB = 16, Action<string>? warn = null, bool releaseFreeMemory = true,
        int nodes = 1, long? dmaMiB = null, long? dma32MiB = null, int[]? cpuToNode = null,
        ArenaBacking backing = ArenaBacking.NativeMemory, TimeSpan? reportingDelay = null)
        => new(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = sizeMiB * MiB,
                Nodes = nodes,
                DmaZoneSize = dmaMiB is { } d ? d * MiB : null,
                Dma32ZoneSize = dma32MiB is { } d32 ? d32 * MiB : null,
                CpuToNode = cpuToNode,
                Backing = backing,
                Checks = CheckedModeOptions.Parse(""),
                LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow,
            },
            PageAllocator = new PageAllocatorOptions
            {
                Warn = warn, ReleaseFreeMemory = releaseFreeMemory, FreePageReportingDelay = reportingDelay ?? TimeSpan.Zero,
            },
        });

    /// <summary>A sparse (hot-pluggable) single-node system.</summary>
    public static MemorySystem NewSparseSystem(long sizeMiB, long sectionMiB, long maxMiB, bool autoGrow = true,
        int nodes = 1, bool releaseFreeMemory = true)
        => new(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = sizeMiB * MiB,
                Model = MemoryModel.Sparse,
                SectionSize = sectionMiB * MiB,
                MaxSize = maxMiB * MiB,
                Nodes = nodes,
                Checks = CheckedModeOptions.Parse(""),
                LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow,
            },
            PageAllocator = new PageAllocatorOptions
            {
                AutoGrow = autoGrow, ReleaseFreeMemory = releaseFreeMemory, FreePageReportingDelay = TimeSpan.Zero,
            },
        });

    /// <summary>Allocates blocks of <paramref name="order"/> with <paramref name="gfp"/> until one fails; returns them.</summary>
    public static List<nint> AllocateUntilFailure(PageAllocator pa, Gfp gfp, int order = 0)
    {
        var pages = new List<nint>();
        while (true)
        {
            PageFrame* page = pa.AllocPages(gfp, order);
            if (page == null) return pages;
            pages.Add((nint)page);
        }
    }

    /// <summary>
    /// A NoFail request that had to wait got its page (<paramref name="got"/>) and counted no failure; frees it and
    /// <paramref name="pages"/>.
    /// </summary>
    public static void AssertWaitedNoFailSucceeded(PageAllocator pa, nint got, long failuresBefore, List<nint> pages)
    {
        Assert.NotEqual(0, got);
        Assert.Equal(failuresBefore, pa.AllocFailures);
        pages.Add(got);
        foreach (nint p in pages) pa.FreePages((PageFrame*)p, 0);
        pages.Clear();
    }

    /// <summary>Everything a rejected operation must leave untouched.</summary>
    public readonly record struct FreeListState(string BuddyInfo, long[] Blocks, long PcpPages, long NrFreePages, long PagesFreed,
        long PagesAllocated);

    public static FreeListState Snapshot(PageAllocator pa)
        => new(pa.BuddyInfo(), pa.FreeBlockCounts().Cast<long>().ToArray(), pa.PcpPages, pa.NrFreePages, pa.PagesFreed,
            pa.PagesAllocated);

    public static void AssertSameState(FreeListState expected, FreeListState actual)
    {
        Assert.Equal(expected.BuddyInfo, actual.BuddyInfo);
        Assert.Equal(expected.Blocks, actual.Blocks);
        Assert.Equal(expected.PcpPages, actual.PcpPages);
        Assert.Equal(expected.NrFreePages, actual.NrFreePages);
        Assert.Equal(expected.PagesFreed, actual.PagesFreed);
        Assert.Equal(expected.PagesAllocated, actual.PagesAllocated);
    }

    /// <summary>Writes <paramref name="tag"/>+index at the start of every page of the block and ~tag in its last 8 bytes.</summary>
    public static void Stamp(PageAllocator pa, PageFrame* page, int order, ulong tag)
    {
        byte* bytes = pa.PageAddress(page);
        long pages = 1L << order;
        for (long i = 0; i < pages; i++) *(ulong*)(bytes + (i << PageFrame.PageShift)) = tag + (ulong)i;
        *(ulong*)(bytes + (pages << PageFrame.PageShift) - 8) = ~tag;
    }

    /// <summary>Throws when a stamp written by <see cref="Stamp"/> was overwritten (two owners of the same memory).</summary>
    public static void CheckStamp(PageAllocator pa, PageFrame* page, int order, ulong tag)
    {
        byte* bytes = pa.PageAddress(page);
        long pages = 1L << order;
        for (long i = 0; i < pages; i++)
        {
            ulong found = *(ulong*)(bytes + (i << PageFrame.PageShift));
            if (found != tag + (ulong)i)
                throw new Xunit.Sdk.XunitException($"Block pfn 0x{page->Pfn:x} order {order}: page {i} stamp 0x{found:x}, expected 0x{tag + (ulong)i:x}.");
        }
        ulong last = *(ulong*)(bytes + (pages << PageFrame.PageShift) - 8);
        if (last != ~tag)
            throw new Xunit.Sdk.XunitException($"Block pfn 0x{page->Pfn:x} order {order}: tail stamp 0x{last:x}, expected 0x{~tag:x}.");
    }

    /// <summary>True when every byte of the block is zero.</summary>
    public static bool IsZero(PageAllocator pa, PageFrame* page, int order)
        => new ReadOnlySpan<byte>(pa.PageAddress(page), PageFrame.PageSize << order).IndexOfAnyExcept((byte)0) < 0;

    /// <summary>
    /// The watermark an allocation with <paramref name="gfp"/> is checked against after the fast attempt (the kernel's
    /// __zone_watermark_ok with ALLOC_WMARK_MIN): __GFP_HIGH takes min/2 off, and a caller that cannot block a further quarter.
    /// </summary>
    public static long AdjustedMin(Zone zone, Gfp gfp)
    {
        long min = zone.WatermarkMin;
        if ((gfp & Gfp.High) != 0)
        {
            min -= min / 2;
            if ((gfp & Gfp.DirectReclaim) == 0 && (gfp & Gfp.NoMemAlloc) == 0) min -= min / 4;
        }
        return min;
    }

    /// <summary>min_free_kbytes as LINUX-FACTS gives it: clamp(sqrt(lowmem_kbytes * 16), 128, 262144).</summary>
    public static long ExpectedMinFreeKbytes(long managedPages)
        => Math.Clamp((long)Math.Sqrt(managedPages * 4 * 16.0), 128, 262144);

    /// <summary>(min, low, high) for a zone as LINUX-FACTS gives them (scale factor 10).</summary>
    public static (long Min, long Low, long High) ExpectedWatermarks(long zoneManaged, long totalManaged, long? minFreeKbytes = null)
    {
        long pagesMin = (minFreeKbytes ?? ExpectedMinFreeKbytes(totalManaged)) / 4;
        long min = pagesMin * zoneManaged / totalManaged;
        long tmp = Math.Max(min / 4, zoneManaged * 10 / 10000);
        return (min, min + tmp, min + 2 * tmp);
    }

    /// <summary>Populated zones an allocation with <paramref name="gfp"/> may use (any node).</summary>
    public static IEnumerable<Zone> AllowedZones(PageAllocator pa, Gfp gfp)
        => pa.Zones.Where(z => z.Populated && z.Type <= gfp.HighestZone());

    /// <summary>True when the zone holds a free block of at least <paramref name="order"/>.</summary>
    public static bool HasBlockOfAtLeast(Zone zone, int order)
    {
        for (int o = order; o <= PageAllocator.MaxOrder; o++)
            if (zone.FreeBlocks(o) > 0) return true;
        return false;
    }

    /// <summary>Fisher-Yates shuffle with a seeded source.</summary>
    public static void Shuffle<T>(IList<T> list, Random random)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }
}
