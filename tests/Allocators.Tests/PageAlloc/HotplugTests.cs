using System.Text.RegularExpressions;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>Sparse model: sections hot-added (explicitly and by growth) and hot-removed when fully free.</summary>
public sealed unsafe partial class HotplugTests
{
    private const long PagesPerSection = 8 * MiB / 4096;   // 2048

    // Size 16 MiB (sections 0 and 1 online), room for 6 sections of 8 MiB.
    private static MemorySystem Sparse(bool autoGrow = true) => NewSparseSystem(16, 8, 48, autoGrow);

    [GeneratedRegex(@"Node 0, zone\s+Normal\n(?:.*\n)*?\s+present\s+(\d+)\n\s+managed\s+(\d+)")]
    private static partial Regex NormalPresent();

    private static long ZoneInfoPresent(PageAllocator pa)
    {
        Match m = NormalPresent().Match(pa.ZoneInfo());
        Assert.True(m.Success, pa.ZoneInfo());
        Assert.Equal(m.Groups[1].Value, m.Groups[2].Value);
        return long.Parse(m.Groups[1].Value);
    }

    [Fact]
    public void AddMemoryGrowsTheZone()
    {
        using var sys = Sparse();
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.Equal(2 * PagesPerSection, sys.Memory.PresentPages);
        Assert.Equal(2 * PagesPerSection, ZoneInfoPresent(pa));
        long minBefore = normal.WatermarkMin;

        Assert.Equal(2, pa.AddMemory());
        Assert.True(sys.Memory.IsSectionOnline(2));
        Assert.Equal(3 * PagesPerSection, sys.Memory.PresentPages);
        Assert.Equal(3 * PagesPerSection, normal.PresentPages);
        Assert.Equal(3 * PagesPerSection, normal.ManagedPages);
        Assert.Equal(3 * PagesPerSection, ZoneInfoPresent(pa));
        Assert.Equal(3 * PagesPerSection, normal.SpannedPages);
        Assert.Equal(6, normal.FreeBlocks(10));
        Assert.Equal(1, pa.SectionsAdded);
        Assert.Contains(pa.VmStatItems(), i => i == ("memory_hotadd", 1L));
        // Watermarks follow the new size.
        Assert.Equal(ExpectedWatermarks(normal.ManagedPages, pa.ManagedPages).Min, normal.WatermarkMin);
        Assert.True(normal.WatermarkMin > minBefore);

        // The new section's memory is usable through the direct map and virt_to_page.
        var blocks = new List<nint>();
        byte* inNewSection = null;
        for (int i = 0; i < 6 && inNewSection == null; i++)
        {
            byte* b = pa.GetFreePages(Gfp.Kernel, 10);
            Assert.True(b != null);
            blocks.Add((nint)b);
            if (sys.Memory.PfnToSection(pa.VirtToPage(b)->Pfn) == 2) inNewSection = b;
        }
        Assert.True(inNewSection != null, "no block came from the added section");
        new Span<byte>(inNewSection, 4 << 20).Fill(0xA7);
        PageFrame* newPage = pa.VirtToPage(inNewSection);
        Assert.Equal((long)newPage->Pfn << 12, sys.Memory.VirtToPhys(inNewSection));
        Assert.True(pa.VirtToPage(inNewSection + (4 << 20) - 1) == newPage + 1023);
        foreach (nint b in blocks) pa.FreePages((void*)b, 10);

        Assert.Equal(3, pa.AddMemory());
        Assert.Equal(4, pa.AddMemory());
        Assert.Equal(5, pa.AddMemory());
        Assert.Equal(-1, pa.AddMemory());       // at MaxSize
        Assert.Equal(6 * PagesPerSection, sys.Memory.PresentPages);
    }

    [Fact]
    public void AddMemoryNeedsTheSparseModel()
    {
        using var sys = NewSystem(16);
        Assert.Throws<InvalidOperationException>(() => sys.Pages.AddMemory());
    }

    [Fact]
    public void AnAllocationThatWouldFailGrowsTheArena()
    {
        using var sys = Sparse();
        PageAllocator pa = sys.Pages;
        var blocks = new List<nint>();
        PageFrame* p;
        while ((p = pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, 10)) != null) blocks.Add((nint)p);

        Assert.Equal(4, pa.SectionsAdded);
        Assert.Equal(6 * PagesPerSection, sys.Memory.PresentPages);
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        // With all 12 blocks present, an order-10 allocation needs free - 1023 > min.
        long min = normal.WatermarkMin;
        int expected = Enumerable.Range(0, 12).Count(k => (12 - k) * 1024L - 1023 > min);
        Assert.Equal(expected, blocks.Count);
        Assert.Equal(1, pa.AllocFailures);
        Assert.Contains(blocks, b => sys.Memory.PfnToSection(((PageFrame*)b)->Pfn) >= 2);

        foreach (nint b in blocks) pa.FreePages((PageFrame*)b, 10);
        Assert.Equal(12, normal.FreeBlocks(10));
    }

    [Fact]
    public void WithoutAutoGrowOrWithNoRetryTheArenaStaysPut()
    {
        using var fixedSys = Sparse(autoGrow: false);
        var blocks = new List<nint>();
        PageFrame* p;
        while ((p = fixedSys.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 10)) != null) blocks.Add((nint)p);
        Assert.Equal(3, blocks.Count);
        Assert.Equal(0, fixedSys.Pages.SectionsAdded);
        foreach (nint b in blocks) fixedSys.Pages.FreePages((PageFrame*)b, 10);

        using var sys = Sparse();
        blocks.Clear();
        while ((p = sys.Pages.AllocPages(Gfp.Kernel | Gfp.NoRetry | Gfp.NoWarn, 10)) != null) blocks.Add((nint)p);
        Assert.Equal(3, blocks.Count);
        Assert.Equal(0, sys.Pages.SectionsAdded);
        foreach (nint b in blocks) sys.Pages.FreePages((PageFrame*)b, 10);
    }

    [Fact]
    public void RemovingASectionWithALivePageThrowsAndChangesNothing()
    {
        using var sys = Sparse();
        PageAllocator pa = sys.Pages;
        PageFrame* page = pa.AllocPages(Gfp.Kernel, 0);
        int section = sys.Memory.PfnToSection(page->Pfn);
        pa.DrainAllPages();
        FreeListState before = Snapshot(pa);
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        (long present, long managed, long min, long spanned) = (normal.PresentPages, normal.ManagedPages, normal.WatermarkMin, normal.SpannedPages);

        var e = Assert.Throws<InvalidOperationException>(() => pa.RemoveMemory(section));
        Assert.Contains($"0x{page->Pfn:x}", e.Message);

        AssertSameState(before, Snapshot(pa));
        Assert.True(sys.Memory.IsSectionOnline(section));
        Assert.Equal(2 * PagesPerSection, sys.Memory.PresentPages);
        Assert.Equal((present, managed, min, spanned), (normal.PresentPages, normal.ManagedPages, normal.WatermarkMin, normal.SpannedPages));
        Assert.Equal(0, pa.SectionsRemoved);
        Assert.True(page->Has(PageFlags.Allocated));
        pa.FreePages(page, 0);
    }

    [Fact]
    public void RemovingAFreeSectionDropsItsPagesAndAddMemoryBringsThemBack()
    {
        using var sys = Sparse();
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        (long min, long low, long high) = (normal.WatermarkMin, normal.WatermarkLow, normal.WatermarkHigh);

        // Keep a page live in section 0 so that section 1 is the free one.
        PageFrame* page = pa.AllocPages(Gfp.Kernel, 0);
        Assert.Equal(0, sys.Memory.PfnToSection(page->Pfn));
        ulong section1Start = sys.Memory.SectionStartPfn(1);
        byte* formerAddress = sys.Memory.PfnToVirt(section1Start + 5);
        Assert.True(formerAddress != null);

        pa.RemoveMemory(1);
        Assert.False(sys.Memory.IsSectionOnline(1));
        Assert.Equal(PagesPerSection, sys.Memory.PresentPages);
        Assert.Equal(PagesPerSection, normal.PresentPages);
        Assert.Equal(PagesPerSection, normal.ManagedPages);
        Assert.Equal(PagesPerSection, ZoneInfoPresent(pa));
        Assert.Equal(PagesPerSection, normal.SpannedPages);
        Assert.Equal(1, pa.SectionsRemoved);
        Assert.True(pa.PfnToPage(section1Start) == null);
        Assert.True(sys.Memory.PfnToVirt(section1Start) == null);
        Assert.True(sys.Memory.VirtToPage(formerAddress) == null);
        // A stale pointer into the removed section is not the allocator's any more.
        FreeListState removedState = Snapshot(pa);
        var stale = Assert.Throws<Allocators.Common.MemoryCorruptionException>(() => pa.FreePages(formerAddress, 0));
        Assert.Contains($"0x{(nuint)formerAddress:x}", stale.Message);
        AssertSameState(removedState, Snapshot(pa));
        Assert.Equal(ExpectedWatermarks(PagesPerSection, PagesPerSection).Min, normal.WatermarkMin);
        Assert.Equal(pa.ManagedPages - 1, pa.NrFreePages + pa.PcpPages);

        // Only section 0 is handed out now.
        var pages = new List<nint>();
        PageFrame* p;
        while ((p = pa.AllocPages(Gfp.Kernel | Gfp.NoRetry | Gfp.NoWarn, 0)) != null)
        {
            Assert.Equal(0, sys.Memory.PfnToSection(p->Pfn));
            pages.Add((nint)p);
        }
        Assert.Equal(PagesPerSection - normal.WatermarkMin - 1, pages.Count);
        foreach (nint q in pages) pa.FreePages((PageFrame*)q, 0);
        pa.FreePages(page, 0);

        // Round trip.
        Assert.Equal(1, pa.AddMemory());
        pa.DrainAllPages();
        Assert.Equal(2 * PagesPerSection, sys.Memory.PresentPages);
        Assert.Equal(2 * PagesPerSection, ZoneInfoPresent(pa));
        Assert.Equal(boot, pa.BuddyInfo());
        Assert.Equal((min, low, high), (normal.WatermarkMin, normal.WatermarkLow, normal.WatermarkHigh));
        Assert.True(pa.PfnToPage(section1Start) != null);
    }

    [Fact]
    public void RemovingTheFirstSectionMovesTheZoneStart()
    {
        using var sys = Sparse();
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.Equal(0, normal.StartPfn);
        pa.RemoveMemory(0);
        Assert.Equal(PagesPerSection, normal.StartPfn);
        Assert.Equal(PagesPerSection, normal.SpannedPages);
        Assert.Contains($"start_pfn:           {PagesPerSection}", pa.ZoneInfo());

        PageFrame* page = pa.AllocPages(Gfp.Kernel, 3);
        Assert.Equal(1, sys.Memory.PfnToSection(page->Pfn));
        pa.FreePages(page, 3);
        Assert.Throws<ArgumentException>(() => pa.RemoveMemory(0));   // already offline
        Assert.Throws<ArgumentException>(() => pa.RemoveMemory(4));   // never online
    }

    [Fact]
    public void RemoveAndAddManyTimesKeepsTheAccountingExact()
    {
        using var sys = Sparse();
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        for (int round = 0; round < 10; round++)
        {
            int added = pa.AddMemory();
            Assert.Equal(2, added);
            PageFrame* page = pa.AllocPages(Gfp.Kernel | Gfp.Zero, 4);
            Assert.True(IsZero(pa, page, 4));
            pa.FreePages(page, 4);
            pa.RemoveMemory(added);
            Assert.Equal(2 * PagesPerSection, sys.Memory.PresentPages);
            pa.DrainAllPages();
            Assert.Equal(pa.ManagedPages, pa.NrFreePages);
            Assert.Equal(boot, pa.BuddyInfo());
        }
        Assert.Equal(10, pa.SectionsAdded);
        Assert.Equal(10, pa.SectionsRemoved);
    }

    [Theory]
    [InlineData(Gfp.KernelDma)]
    [InlineData(Gfp.KernelDma32)]
    public void GrowthOnlyHappensWhenTheNewSectionCanServeTheRequest(Gfp gfp)
    {
        // Hot-added sections join the Normal zone: a request limited to DMA/DMA32 cannot use them, so growing the
        // arena for it would only waste memory and still fail.
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 16 * MiB, Model = MemoryModel.Sparse, SectionSize = 8 * MiB, MaxSize = 48 * MiB,
                DmaZoneSize = 4 * MiB, Dma32ZoneSize = 4 * MiB,
                LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow, // with a split, hot-added memory is HighMem
            },
        });
        PageAllocator pa = sys.Pages;
        var pages = new List<nint>();
        PageFrame* p;
        while ((p = pa.AllocPages(gfp | Gfp.NoWarn, 0)) != null)
        {
            Assert.True(pa.Zones[p->ZoneId].Type <= gfp.HighestZone());
            pages.Add((nint)p);
        }
        Assert.Equal(0, pa.SectionsAdded);
        Assert.Equal(2 * PagesPerSection, sys.Memory.PresentPages);
        foreach (nint q in pages) pa.FreePages((PageFrame*)q, 0);

        // A request that may use Normal still grows.
        var blocks = new List<nint>();
        while ((p = pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, 10)) != null) blocks.Add((nint)p);
        Assert.Equal(4, pa.SectionsAdded);
        foreach (nint b in blocks) pa.FreePages((PageFrame*)b, 10);
    }
}
