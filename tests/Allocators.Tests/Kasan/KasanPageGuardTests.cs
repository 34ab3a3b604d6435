using Allocators.Common;
using Allocators.Kasan;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Kasan;

/// <summary>
/// KASAN's page guards (<see cref="CheckedModeOptions.KasanPageGuards"/>): every block of pages is followed by a
/// poisoned guard of its size until it is freed, so an overrun is reported even into memory allocated next to it, and
/// the buddy gets back exactly what it handed out.
/// </summary>
public sealed unsafe class KasanPageGuardTests
{
    private static MemorySystem NewSystem(bool guards = true) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions
        {
            Size = 32 << 20,
            Checks = new CheckedModeOptions { Kasan = true, KasanPageGuards = guards },
        },
    });

    [Fact]
    public void AnOverrunOfAnyBlockHitsItsGuardEvenBetweenLiveBlocks()
    {
        using MemorySystem sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        PageAllocator pages = sys.Pages;
        var blocks = new List<(nint Address, int Order)>();
        for (int i = 0; i < 64; i++)
        {
            int order = i % 4;
            Gfp gfp = i % 8 == 3 ? Gfp.Kernel | Gfp.Comp : Gfp.Kernel;
            blocks.Add(((nint)pages.GetFreePages(gfp, order), order));
        }
        foreach ((nint address, int order) in blocks)
        {
            var p = (byte*)address;
            nuint size = (nuint)PageFrame.PageSize << order;
            kasan.Check(p, size, write: true, "test");
            KasanException e = Assert.Throws<KasanException>(() => kasan.Check(p + size, 1, write: true, "test"));
            Assert.Equal("page-out-of-bounds", e.Report.Type);
            Assert.Equal((nuint)(p + size), e.Report.Address);
            Assert.Contains($"0 bytes past the end of the {1 << order}-page block at {(nuint)p:x16}", e.Report.Text, StringComparison.Ordinal);
        }
        Assert.Equal(blocks.Count, kasan.Reports.Count);
        foreach ((nint address, int order) in blocks) pages.FreePages((void*)address, order);
    }

    [Fact]
    public void FreeingGivesBackBlockAndGuardAndTheGuardIsNeverFreeable()
    {
        using MemorySystem sys = NewSystem();
        PageAllocator pages = sys.Pages;
        pages.DrainAllPages();
        long free = pages.NrFreePages;
        PageFrame* block = pages.AllocPages(Gfp.Kernel, 2);
        pages.DrainAllPages();
        Assert.Equal(free - 8, pages.NrFreePages); // four pages and their guard of four
        PageFrame* guard = block + 4;
        Assert.True(guard->Has(PageFlags.Guard));
        // The guard is not a block of the caller's: freeing it, or the block with the wrong order, is refused.
        Assert.Throws<BadPageException>(() => pages.FreePages(guard, 2));
        Assert.Throws<BadPageException>(() => pages.FreePages(block, 3));
        Assert.True(guard->Has(PageFlags.Guard));
        pages.FreePages(block, 2);
        pages.DrainAllPages();
        Assert.Equal(free, pages.NrFreePages);
        Assert.False(guard->Has(PageFlags.Guard));
        Assert.Throws<BadPageException>(() => pages.FreePages(block, 2));
        pages.CheckConsistency();
    }

    [Fact]
    public void SplitPageHandleAndRandomTrafficKeepTheBuddyWhole()
    {
        using MemorySystem sys = NewSystem();
        PageAllocator pages = sys.Pages;
        pages.DrainAllPages();
        long free = pages.NrFreePages;
        PageFrame* split = pages.AllocPages(Gfp.Kernel, 2);
        pages.SplitPage(split, 2);
        for (int i = 0; i < 4; i++) pages.FreePages(split + i, 0);
        PageAllocatorThread handle = pages.ThisThread();
        var rnd = new Random(3);
        var live = new List<(nint Page, int Order)>();
        for (int step = 0; step < 3000; step++)
        {
            if (live.Count > 0 && rnd.Next(2) == 0)
            {
                int k = rnd.Next(live.Count);
                if (k % 2 == 0) handle.FreePages((PageFrame*)live[k].Page, live[k].Order);
                else pages.FreePages((PageFrame*)live[k].Page, live[k].Order);
                live[k] = live[^1];
                live.RemoveAt(live.Count - 1);
            }
            else
            {
                int order = rnd.Next(4);
                PageFrame* page = step % 3 == 0 ? handle.AllocPages(Gfp.Kernel, order) : pages.AllocPages(Gfp.Kernel, order);
                Assert.True(page != null);
                Assert.True((page + (1 << order))->Has(PageFlags.Guard));
                live.Add(((nint)page, order));
            }
        }
        foreach ((nint page, int order) in live) pages.FreePages((PageFrame*)page, order);
        pages.DrainAllPages();
        pages.CheckConsistency();
        Assert.Equal(free, pages.NrFreePages);
        Assert.Empty(sys.Memory.Kasan!.Reports);
    }

    [Fact]
    public void GuardsNeedKasanAndParseByName()
    {
        Assert.True(CheckedModeOptions.Parse("kasan,kasan.page_guards").KasanPageGuards);
        Assert.Throws<ArgumentException>(() => new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16 << 20, Checks = new CheckedModeOptions { Kasan = false, KasanPageGuards = true } },
        }));
        // Without the option, the page after a block is whatever the buddy hands out next.
        using MemorySystem plain = NewSystem(guards: false);
        PageFrame* a = plain.Pages.AllocPages(Gfp.Kernel, 0);
        Assert.False((a + 1)->Has(PageFlags.Guard));
        plain.Pages.FreePages(a, 0);
    }
}
