using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Mmu;

public unsafe class KernelSpaceTests
{
    [Fact]
    public void MapTranslateAccessUnmap()
    {
        using var f = new MmuFixture();
        var page = f.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
        ulong va = VirtualAddress.VmallocStart + 0x5000;
        f.Kernel.MapKernelPage(va, page, PteFlags.PageKernel);
        Assert.True(f.Kernel.TranslateToPage(va + 123) == page);
        Assert.Equal((ulong)page->Pfn, f.Kernel.TranslateToPfn(va));
        f.Kernel.Write<long>(va + 8, 0x55AA);
        Assert.Equal(0x55AA, *(long*)(f.Pages.PageAddress(page) + 8));
        Assert.Equal(0x55AA, f.Kernel.Read<long>(va + 8));
        Assert.Throws<InvalidOperationException>(() => f.Kernel.MapKernelPage(va, page, PteFlags.PageKernel));
        Assert.Throws<ArgumentException>(() => f.Kernel.MapKernelPage(0x10000, page, PteFlags.PageKernel));
        Assert.Throws<ArgumentException>(() => f.Kernel.MapKernelPage(va + 8, page, PteFlags.PageKernel));
        Assert.Throws<ArgumentException>(() => f.Kernel.MapKernelPage(va, page, PteFlags.PageShared));
        Assert.Equal(1, f.Kernel.UnmapKernelRange(va, 4096));
        Assert.True(f.Kernel.TranslateToPage(va) == null);
        var oops = Assert.Throws<KernelOopsException>(() => f.Kernel.Read<long>(va));
        Assert.Equal(va, oops.Address);
        f.Pages.FreePages(page, 0);
        f.AssertAllFreed();
    }

    [Fact]
    public void OopsReportHasTheKernelFormat()
    {
        using var f = new MmuFixture();
        var page = f.Pages.AllocPages(Gfp.Kernel, 0);
        ulong va = VirtualAddress.VmallocStart;
        f.Kernel.MapKernelPage(va, page, PteFlags.PageKernelReadOnly);
        var ex = Assert.Throws<KernelOopsException>(() => f.Kernel.Write<int>(va + 0x1000, 1));
        string[] lines = ex.Report.Split('\n');
        Assert.Equal("BUG: unable to handle page fault for address: ffffc90000001000", lines[0]);
        Assert.Equal("#PF: supervisor write access in kernel mode", lines[1]);
        Assert.Equal("#PF: error_code(0x0002) - not-present page", lines[2]);
        Assert.Matches("^PGD ([0-9a-f]+) P4D \\1 PUD [0-9a-f]+ PMD [0-9a-f]+ PTE 0$", lines[3]);
        Assert.StartsWith("Oops: 0002 [#1] SMP NOPTI", lines[4]);
        Assert.StartsWith("CPU: ", lines[5]);

        var ro = Assert.Throws<KernelOopsException>(() => f.Kernel.Write<int>(va, 1));
        Assert.Contains("#PF: error_code(0x0003) - permissions violation", ro.Report);
        Assert.Contains("[#2]", ro.Report);
        Assert.Matches("PTE 8[0-9a-f]+", ro.Report);

        var nul = Assert.Throws<KernelOopsException>(() => f.Kernel.Read<int>(0x10));
        Assert.StartsWith("BUG: kernel NULL pointer dereference, address: 0000000000000010\n#PF: supervisor read access in kernel mode\n#PF: error_code(0x0000) - not-present page\nPGD 0 P4D 0 \n", nul.Report);
        Assert.Equal(3, f.Kernel.Log.Count);
        Assert.Equal(3, f.Kernel.Statistics.Oopses);
        Span<byte> buf = stackalloc byte[8];
        Assert.False(f.Kernel.CopyFromKernelNoFault(va + 0x1000, buf));
        Assert.True(f.Kernel.CopyFromKernelNoFault(va, buf));
        f.Kernel.UnmapKernelRange(va, 4096);
        f.Pages.FreePages(page, 0);
        f.AssertAllFreed();
    }

    [Fact]
    public void ProcessesSyncKernelEntriesOnFault()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            var page = f.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
            // The kernel gets a new PGD entry after the process was created: the process lacks it.
            ulong va = VirtualAddress.VmallocStart + 0x20_0000;
            f.Kernel.MapKernelPage(va, page, PteFlags.PageKernel);
            f.Kernel.Write<int>(va, 77);
            Assert.False(mm.GetPte(va).Present);
            Assert.Equal(77, mm.ReadKernel<int>(va));
            Assert.Equal(1, f.Kernel.Statistics.VmallocSyncs);
            Assert.True(mm.GetPte(va).Present);
            // User mode may not touch it.
            Assert.Throws<SegmentationFaultException>(() => mm.Read<int>(va));
            // A process created now gets the entry at creation.
            using (var later = f.NewProcess())
            {
                Assert.Equal(77, later.ReadKernel<int>(va));
                Assert.Equal(1, f.Kernel.Statistics.VmallocSyncs);
            }
            // An unmapped kernel address is an oops in the process context too.
            var ex = Assert.Throws<KernelOopsException>(() => mm.ReadKernel<int>(va + 4096));
            Assert.Contains("#PF: supervisor read access in kernel mode", ex.Report);
            Assert.Contains($"PID: {mm.Pid} Comm: {mm.Name}", ex.Report);
            f.Kernel.UnmapKernelRange(va, 4096);
            f.Pages.FreePages(page, 0);
        }
        f.AssertAllFreed();
    }
}

public unsafe class KernelLazyUnmapTests
{
    [Fact]
    public void NoFlushUnmapLeavesTheTranslationUntilTheBatchedFlush()
    {
        using var f = new MmuFixture();
        var page = f.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
        ulong va = VirtualAddress.VmallocStart + 0x80_0000;
        f.Kernel.MapKernelPage(va, page, PteFlags.PageKernel);
        f.Kernel.Write<long>(va, 17);
        Assert.Equal(1, f.Kernel.UnmapKernelRangeNoFlush(va, 4096));
        Assert.True(f.Kernel.TranslateToPage(va) == null);
        Assert.Equal(17, f.Kernel.Read<long>(va)); // stale, as on hardware, until the flush
        f.Kernel.FlushTlbRange(va, va + 4096);
        Assert.Throws<KernelOopsException>(() => f.Kernel.Read<long>(va));
        f.Pages.FreePages(page, 0);
        f.AssertAllFreed();
    }
}
