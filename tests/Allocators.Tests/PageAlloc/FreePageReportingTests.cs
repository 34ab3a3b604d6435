using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>Free page reporting: free max-order blocks above the high watermark go back to the host and stay usable.</summary>
public sealed unsafe class FreePageReportingTests
{
    /// <summary>Allocates every order-10 block, fills it, frees all but <paramref name="keep"/> of them.</summary>
    private static List<nint> TouchAllBlocks(PageAllocator pa, byte fill, int keep)
    {
        var blocks = new List<nint>();
        PageFrame* b;
        while ((b = pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn, 10)) != null)
        {
            new Span<byte>(pa.PageAddress(b), 4 << 20).Fill(fill);
            blocks.Add((nint)b);
        }
        foreach (nint f in blocks.Skip(keep)) pa.FreePages((PageFrame*)f, 10);
        return blocks;
    }

    [Fact]
    public void FreshArenaHasNothingToReleaseBecauseItWasNeverTouched()
    {
        using var sys = NewSystem(16, releaseFreeMemory: false);
        PageAllocator pa = sys.Pages;
        Assert.Equal(pa.ManagedPages, pa.ReportedPages);   // boot memory is born reported
        Assert.Equal(0, pa.ReleaseFreeMemory());
        Assert.Equal(0, pa.PagesReleasedToHost);
    }

    [Fact]
    public void ReleaseFreeMemoryOnAMostlyFreeArenaReleasesAndTheMemoryIsReusable()
    {
        Assert.True(OperatingSystem.IsLinux(), "madvise(MADV_DONTNEED) is Linux-only; CI runs on Linux");
        using var sys = NewSystem(32, releaseFreeMemory: false, dmaMiB: 0, dma32MiB: 0);
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        var blocks = TouchAllBlocks(pa, 0xE1, keep: 1);
        Assert.Equal(8, blocks.Count);
        var live = (PageFrame*)blocks[0];
        Assert.Equal(0, pa.ReportedPages);
        long before = pa.PagesReleasedToHost;

        long released = pa.ReleaseFreeMemory();
        Assert.True(released > 0);
        Assert.Equal(0, released % 1024);
        Assert.Equal(before + released, pa.PagesReleasedToHost);
        Assert.Equal(released, pa.ReportedPages);
        Assert.Contains($"nr_free_reported {released}", pa.ZoneInfo());
        Assert.Contains(pa.VmStatItems(), i => i == ("pages_released_to_host", released));
        // What stays resident is still above the high watermark, and less than a block more than needed.
        long resident = normal.FreePages - normal.ReportedPages;
        Assert.InRange(resident - normal.WatermarkHigh, 0, 1023);
        // Free accounting and the buddy lists are unchanged by reporting.
        Assert.Equal(7, normal.FreeBlocks(10));
        Assert.Equal(7 * 1024, normal.FreePages);

        // The live block kept its bytes; reported free blocks were given back (read zero), others kept theirs.
        Assert.True(new ReadOnlySpan<byte>(pa.PageAddress(live), 4 << 20).IndexOfAnyExcept((byte)0xE1) < 0);
        foreach (nint f in blocks.Skip(1))
        {
            var page = (PageFrame*)f;
            Assert.Equal(page->Has(PageFlags.Reported), IsZero(pa, page, 10));
        }

        // Reusable: take everything again, split some of it small, write, read back.
        var again = new List<(nint, int)>();
        PageFrame* b;
        while ((b = pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn, 6)) != null)
        {
            new Span<byte>(pa.PageAddress(b), 4096 << 6).Fill(0x3C);
            again.Add(((nint)b, 6));
        }
        Assert.Equal(7 * 16, again.Count);
        Assert.Equal(0, pa.ReportedPages);
        foreach (var (p, order) in again)
        {
            Assert.True(new ReadOnlySpan<byte>(pa.PageAddress((PageFrame*)p), 4096 << order).IndexOfAnyExcept((byte)0x3C) < 0);
            pa.FreePages((PageFrame*)p, order);
        }
        pa.FreePages(live, 10);
    }

    [Fact]
    public void ReleaseHappensOnItsOwnWhenEnabledAndKeepsACushion()
    {
        using var sys = NewSystem(32, dmaMiB: 0, dma32MiB: 0);   // ReleaseFreeMemory = true by default
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        TouchAllBlocks(pa, 0x11, keep: 0);
        Assert.True(pa.PagesReleasedToHost > 0, "freeing touched blocks should have released some");
        long resident = normal.FreePages - normal.ReportedPages;
        Assert.True(resident - normal.WatermarkHigh >= 1024, "automatic release keeps a block above the high watermark");
        Assert.Equal(normal.ManagedPages, normal.FreePages);
    }

    [Fact]
    public void ReportingWaitsForTheDelayThenRunsOnAWorker()
    {
        var delay = TimeSpan.FromSeconds(1);
        using var sys = NewSystem(32, dmaMiB: 0, dma32MiB: 0, reportingDelay: delay);
        PageAllocator pa = sys.Pages;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        TouchAllBlocks(pa, 0x22, keep: 0);
        // Freed memory stays resident for the delay: allocating it again right away costs no host page faults.
        // (Checked only while the delay has surely not run out, so a slow machine cannot fail it.)
        long releasedEarly = pa.PagesReleasedToHost;
        if (clock.Elapsed < delay * 0.8) Assert.Equal(0, releasedEarly);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (pa.PagesReleasedToHost == 0 && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.True(pa.PagesReleasedToHost > 0, "the delayed report never ran");
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.True(normal.FreePages - normal.ReportedPages - normal.WatermarkHigh >= 1024, "the report keeps a block above the high watermark");
        Assert.Equal(normal.ManagedPages, normal.FreePages);
    }

    [Fact]
    public void SplittingAReportedBlockKeepsTheReportedAccountingExact()
    {
        using var sys = NewSystem(16, releaseFreeMemory: false);
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.Equal(4096, normal.ReportedPages);
        PageFrame* page = pa.AllocPages(Gfp.Kernel, 5);   // splits a reported block: the halves stay reported
        Assert.Equal(4096 - 32, normal.ReportedPages);
        pa.FreePages(page, 5);                            // merged back, but it was touched: no longer reported
        Assert.Equal(3072, normal.ReportedPages);
        Assert.Equal(4096, normal.FreePages);
        Assert.Equal(4, normal.FreeBlocks(10));
    }
}
