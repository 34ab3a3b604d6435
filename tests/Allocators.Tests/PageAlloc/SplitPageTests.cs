using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>split_page: a non-compound block becomes independent order-0 pages.</summary>
public sealed unsafe class SplitPageTests
{
    [Theory]
    [InlineData(2, 0)]
    [InlineData(2, 1)]
    [InlineData(5, 2)]
    [InlineData(10, 3)]
    public void SplitThenFreeOneByOneRestoresBuddyInfo(int order, int seed)
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        long freed = pa.PagesFreed, allocated = pa.PagesAllocated;

        PageFrame* block = pa.AllocPages(Gfp.Kernel, order);
        pa.SplitPage(block, order);
        int n = 1 << order;
        var pages = new List<nint>();
        for (int i = 0; i < n; i++)
        {
            PageFrame* p = block + i;
            Assert.True(p->Has(PageFlags.Allocated));
            Assert.Equal(0, p->Order);
            Assert.Equal(1, p->RefCount);
            pages.Add((nint)p);
        }
        Assert.Equal(allocated + n, pa.PagesAllocated);

        Shuffle(pages, new Random(seed));
        for (int i = 0; i < n; i++)
        {
            var p = (PageFrame*)pages[i];
            if (i % 2 == 0) pa.FreePages(p, 0); else pa.FreePage(pa.PageAddress(p));
            Assert.Equal(freed + i + 1, pa.PagesFreed);
            // The others are still live and individually owned.
            if (i + 1 < n) Assert.True(((PageFrame*)pages[i + 1])->Has(PageFlags.Allocated));
        }
        pa.DrainAllPages();
        Assert.Equal(boot, pa.BuddyInfo());
    }

    [Fact]
    public void SplitPagesCanBeKeptAndFreedIndependently()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        PageFrame* block = pa.AllocPages(Gfp.Kernel | Gfp.Zero, 2);
        pa.SplitPage(block, 2);
        pa.FreePages(block + 1, 0);
        pa.FreePages(block + 3, 0);
        pa.DrainAllPages();
        // Pages 0 and 2 are still in use: their neighbours cannot merge past them.
        Assert.True(block->Has(PageFlags.Allocated) && (block + 2)->Has(PageFlags.Allocated));
        Assert.True((block + 1)->Has(PageFlags.Buddy) && (block + 3)->Has(PageFlags.Buddy));
        Assert.Throws<Allocators.Common.BadPageException>(() => pa.FreePages(block, 2));
        pa.FreePages(block + 2, 0);
        pa.FreePages(block, 0);
        pa.DrainAllPages();
        Assert.Equal(boot, pa.BuddyInfo());
    }
}
