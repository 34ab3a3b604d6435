using Allocators.Common;
using Allocators.Kasan;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Kasan;

/// <summary>
/// Freed blocks of pages wait in KASAN's quarantine, poisoned, before they reach the free lists: a use after free of a
/// page is reported instead of reading the next owner's data, the block is not handed out again meanwhile, a second
/// free is refused, and draining gives everything back.
/// </summary>
public sealed unsafe class KasanPageQuarantineTests
{
    private static MemorySystem NewSystem(string extra = "") => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 32 << 20, Checks = CheckedModeOptions.Parse("kasan" + extra) },
    });

    [Fact]
    public void AFreedPageWaitsPoisonedAndIsNotHandedOutAgain()
    {
        using MemorySystem sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        PageAllocator pages = sys.Pages;
        pages.DrainAllPages();
        long free = pages.NrFreePages;
        PageFrame* page = pages.AllocPages(Gfp.Kernel, 0);
        byte* p = pages.AddressOf(page);
        pages.FreePages(page, 0);
        Assert.True(kasan.Quarantine.Contains(page));
        KasanException e = Assert.Throws<KasanException>(() => kasan.Check(p + 100, 8, write: false, "test"));
        Assert.Equal("use-after-free", e.Report.Type);
        // Without the quarantine the thread's page list would hand the same page out next.
        var again = new List<nint>();
        for (int i = 0; i < 64; i++)
        {
            PageFrame* q = pages.AllocPages(Gfp.Kernel, 0);
            Assert.True(q != page);
            again.Add((nint)q);
        }
        Assert.Throws<BadPageException>(() => pages.FreePages(page, 0));
        foreach (nint q in again) pages.FreePages((PageFrame*)q, 0);
        pages.DrainAllPages();
        Assert.Equal(0, kasan.Quarantine.Count);
        Assert.Equal(free, pages.NrFreePages);
        pages.CheckConsistency();
    }

    [Fact]
    public void BlocksTheSlabLayerQuarantinedGoStraightBack()
    {
        using MemorySystem sys = NewSystem();
        KasanQuarantine quarantine = sys.Memory.Kasan!.Quarantine;
        void* large = sys.Slab.Kmalloc(40_000);
        KmemCacheOfSize64(sys, out nint[] objects);
        sys.Slab.Kfree(large);
        foreach (nint o in objects) sys.Slab.Kfree((void*)o);
        // The large kmalloc and the objects wait once; their pages, freed when they leave, do not wait again.
        quarantine.Flush();
        sys.Slab.ShrinkAll();
        Assert.Equal(0, quarantine.Count);
    }

    private static void KmemCacheOfSize64(MemorySystem sys, out nint[] objects)
    {
        objects = new nint[200];
        for (int i = 0; i < objects.Length; i++) objects[i] = (nint)sys.Slab.Kmalloc(64);
    }

    [Fact]
    public void WithInitOnFreeAPageLeavesTheQuarantineZero()
    {
        using MemorySystem sys = NewSystem(",init_on_free");
        PageAllocator pages = sys.Pages;
        PageFrame* page = pages.AllocPages(Gfp.Kernel, 1);
        byte* p = pages.AddressOf(page);
        new Span<byte>(p, 2 * PageFrame.PageSize).Fill(0x5A);
        pages.FreePages(page, 1);
        pages.DrainAllPages();
        Assert.False(page->Has(PageFlags.Allocated));
        Assert.Equal(-1, new ReadOnlySpan<byte>(p, 2 * PageFrame.PageSize).IndexOfAnyExcept((byte)0));
    }
}
