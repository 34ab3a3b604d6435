using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>__GFP_COMP: head and tail pages, compound_head, and reference counting through any page of the block.</summary>
public sealed unsafe class CompoundPageTests : IDisposable
{
    private readonly MemorySystem _sys = NewSystem(16);
    private readonly string _boot;

    public CompoundPageTests() => _boot = Pa.BuddyInfo();

    private PageAllocator Pa => _sys.Pages;

    public void Dispose() => _sys.Dispose();

    private void AssertBackToBoot()
    {
        Pa.DrainAllPages();
        Assert.Equal(_boot, Pa.BuddyInfo());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(10)]
    public void HeadCarriesTheOrderAndTailsPointAtTheHead(int order)
    {
        PageFrame* head = Pa.AllocPages(Gfp.Kernel | Gfp.Comp, order);
        Assert.True(head->Has(PageFlags.Head));
        Assert.False(head->Has(PageFlags.Tail));
        Assert.Equal(order, head->Order);
        Assert.Equal(1, head->RefCount);
        Assert.True(PageFrame.CompoundHead(head) == head);
        for (int i = 1; i < 1 << order; i++)
        {
            PageFrame* tail = head + i;
            Assert.True(tail->Has(PageFlags.Tail), $"page {i} is not a tail");
            Assert.False(tail->Has(PageFlags.Head) || tail->Has(PageFlags.Allocated));
            Assert.True(PageFrame.CompoundHead(tail) == head);
            Assert.Equal(1, Pa.PageRefCount(tail));
        }
        Pa.FreePages(head, order);
        Assert.False(head->Has(PageFlags.Head));
        for (int i = 1; i < 1 << order; i++)
        {
            Assert.False((head + i)->Has(PageFlags.Tail));
            Assert.True(PageFrame.CompoundHead(head + i) == head + i);
        }
        AssertBackToBoot();
    }

    [Fact]
    public void Order0WithCompIsAPlainPage()
    {
        PageFrame* page = Pa.AllocPages(Gfp.Kernel | Gfp.Comp, 0);
        Assert.False(page->Has(PageFlags.Head));
        Pa.FreePages(page, 0);
        AssertBackToBoot();
    }

    [Fact]
    public void PutPageOnATailFreesTheWholeBlock()
    {
        long freed = Pa.PagesFreed;
        PageFrame* head = Pa.AllocPages(Gfp.Kernel | Gfp.Comp, 3);
        Pa.PutPage(head + 5);
        Assert.Equal(freed + 8, Pa.PagesFreed);
        Assert.False(head->Has(PageFlags.Allocated));
        Assert.Equal(0, head->RefCount);
        for (int i = 1; i < 8; i++) Assert.False((head + i)->Has(PageFlags.Tail));
        AssertBackToBoot();
    }

    [Fact]
    public void GetPageAndPutPageFreeOnlyAtZero()
    {
        long freed = Pa.PagesFreed;
        PageFrame* head = Pa.AllocPages(Gfp.Kernel | Gfp.Comp, 3);
        Pa.GetPage(head + 2);                 // a tail's reference counts on the head
        Pa.GetPage(head);
        Assert.Equal(3, head->RefCount);
        Assert.Equal(3, Pa.PageRefCount(head + 7));

        Pa.PutPage(head + 7);
        Assert.Equal(2, head->RefCount);
        Pa.FreePages(head, 3);                // __free_pages drops one reference too
        Assert.Equal(1, head->RefCount);
        Assert.True(head->Has(PageFlags.Allocated) && head->Has(PageFlags.Head));
        Assert.True((head + 7)->Has(PageFlags.Tail));
        Assert.Equal(freed, Pa.PagesFreed);

        Pa.PutPage(head + 1);
        Assert.Equal(freed + 8, Pa.PagesFreed);
        Assert.False(head->Has(PageFlags.Allocated));
        Assert.Throws<BadPageException>(() => Pa.PutPage(head));
        AssertBackToBoot();
    }

    [Fact]
    public void GetPageOnAPlainBlockCountsOnItsFirstPage()
    {
        PageFrame* block = Pa.AllocPages(Gfp.Kernel, 2);
        Pa.GetPage(block);
        Pa.PutPage(block);
        Assert.True(block->Has(PageFlags.Allocated));
        Pa.PutPage(block);
        Assert.False(block->Has(PageFlags.Allocated));
        AssertBackToBoot();
    }

    [Fact]
    public void CorruptedTailIsDetectedBeforeAnythingIsFreed()
    {
        PageFrame* head = Pa.AllocPages(Gfp.Kernel | Gfp.Comp, 2);
        PageFrame* other = Pa.AllocPages(Gfp.Kernel, 0);
        nuint saved = (head + 3)->Private;
        (head + 3)->Private = (nuint)other;   // a stray write into the tail's compound_head
        FreeListState before = Snapshot(Pa);
        var e = Assert.Throws<BadPageException>(() => Pa.FreePages(head, 2));
        Assert.Contains($"0x{(head + 3)->Pfn:x}", e.Message);
        AssertSameState(before, Snapshot(Pa));
        Assert.True(head->Has(PageFlags.Head) && head->Has(PageFlags.Allocated));

        (head + 3)->Private = saved;
        Pa.FreePages(head, 2);
        Pa.FreePages(other, 0);
        AssertBackToBoot();
    }

    [Fact]
    public void CorruptedTailFreedThroughTheThreadHandleChangesNothing()
    {
        // The handle checks and clears the tails in one pass: the ones before the bad tail are put back.
        PageAllocatorThread handle = Pa.ThisThread();
        PageFrame* head = handle.AllocPages(Gfp.Kernel | Gfp.Comp, 3);
        PageFrame* bad = head + 5;
        nuint saved = bad->Private;
        bad->Private = 0;
        FreeListState before = Snapshot(Pa);
        var e = Assert.Throws<BadPageException>(() => Pa.ThisThread().FreePages(head, 3));
        Assert.Contains($"0x{bad->Pfn:x}", e.Message);
        AssertSameState(before, Snapshot(Pa));
        Assert.True(head->Has(PageFlags.Head) && head->Has(PageFlags.Allocated) && head->RefCount == 1);
        for (int i = 1; i < 8; i++)
        {
            if (i == 5) continue;
            Assert.True((head + i)->Has(PageFlags.Tail) && (head + i)->Private == (nuint)head, $"tail {i}");
        }

        bad->Private = saved;
        Pa.ThisThread().FreePages(head, 3);
        Assert.False(head->Has(PageFlags.Head));
        for (int i = 1; i < 8; i++) Assert.False((head + i)->Has(PageFlags.Tail));
        AssertBackToBoot();
    }

    [Fact]
    public void CompoundPagesCycleThroughThePerThreadLists()
    {
        // Orders 1..3 are cached per thread: a freed compound page must come back as a clean block.
        for (int round = 0; round < 50; round++)
        {
            int order = 1 + round % 3;
            PageFrame* comp = Pa.AllocPages(Gfp.Kernel | Gfp.Comp, order);
            Pa.FreePages(comp, order);
            PageFrame* plain = Pa.AllocPages(Gfp.Kernel, order);
            Assert.False(plain->Has(PageFlags.Head));
            for (int i = 1; i < 1 << order; i++) Assert.False((plain + i)->Has(PageFlags.Tail));
            Pa.FreePages(plain, order);
        }
        AssertBackToBoot();
    }
}
