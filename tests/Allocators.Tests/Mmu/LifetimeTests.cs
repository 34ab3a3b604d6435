using Allocators.Mmu;
using Allocators.PageAlloc;

namespace Allocators.Tests.Mmu;

public unsafe class LifetimeTests
{
    [Fact]
    public void DisposedSpaceRejectsAccess()
    {
        using var f = new MmuFixture();
        var mm = f.NewProcess();
        ulong a = mm.Mmap(0, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        mm.Write<int>(a, 1);
        mm.Dispose();
        Assert.Throws<ObjectDisposedException>(() => mm.Read<int>(a));
        Assert.Throws<ObjectDisposedException>(() => mm.Mmap(0, 4096, MemoryProtection.Read, MapFlags.Private | MapFlags.Anonymous));
        mm.Dispose(); // idempotent
        Assert.Equal(0, f.Kernel.LiveProcesses);
        f.AssertAllFreed();
    }

    [Fact]
    public void ManySpacesAndThreadsTearDownToTheInitialState()
    {
        using var f = new MmuFixture();
        var spaces = Enumerable.Range(0, 6).Select(i => f.NewProcess($"p{i}")).ToArray();
        var threads = spaces.Select(mm => new Thread(() =>
        {
            ulong a = mm.Mmap(0, 512 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            for (int i = 0; i < 512; i += 3) mm.Write<int>(a + (ulong)i * 4096, i);
            using var child = mm.Fork();
            for (int i = 0; i < 512; i += 7) child.Write<int>(a + (ulong)i * 4096, -i);
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.True(f.Kernel.Statistics.AnonPages > 0);
        Assert.True(f.Kernel.Statistics.PageTablePages > 0);
        foreach (var mm in spaces) mm.Dispose();
        Assert.Equal(0, f.Kernel.Statistics.AnonPages);
        f.AssertAllFreed();
    }

    [Fact]
    public void KernelMapsManyPagesAndCountsTheirTables()
    {
        using var f = new MmuFixture();
        var pages = new nint[600];
        Assert.Equal(600, f.Pages.AllocPagesBulk(Gfp.Kernel | Gfp.Zero, pages));
        ulong va = VirtualAddress.VmallocStart + (1UL << 30) - 300 * 4096UL; // crosses a PUD boundary
        long tables = f.Pages.NrPageTablePages;
        f.Kernel.MapKernelPages(va, pages, PteFlags.PageKernel);
        Assert.True(f.Pages.NrPageTablePages > tables);
        for (int i = 0; i < pages.Length; i++)
        {
            Assert.True(f.Kernel.TranslateToPage(va + (ulong)i * 4096) == (Allocators.Physical.PageFrame*)pages[i]);
            f.Kernel.Write<int>(va + (ulong)i * 4096 + 4, i);
        }
        var data = new byte[600 * 4096];
        f.Kernel.ReadBytes(va, data);
        Assert.Equal(599, BitConverter.ToInt32(data, 599 * 4096 + 4));
        Assert.Throws<InvalidOperationException>(() => f.Kernel.MapKernelPages(va + 4096 * 599, pages.AsSpan(0, 2), PteFlags.PageKernel));
        Assert.True(f.Kernel.TranslateToPage(va + 600 * 4096) == null); // the failed call mapped nothing
        Assert.Equal(600, f.Kernel.UnmapKernelRange(va, 600 * 4096));
        f.Pages.FreePagesBulk(pages);
        f.AssertAllFreed();
    }
}
