using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Allocators.Common;
using Allocators.Physical;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>Allocates 2^<paramref name="order"/> pages and returns their address, or null (__get_free_pages).</summary>
    public byte* GetFreePages(Gfp gfp, int order)
    {
        PageFrame* page = AllocPages(gfp, order);
        return page == null ? null : AddressOf(page);
    }

    /// <summary>Allocates one zeroed page and returns its address, or null (get_zeroed_page).</summary>
    public byte* GetZeroedPage(Gfp gfp) => GetFreePages(gfp | Gfp.Zero, 0);

    /// <summary>Allocates one page and returns its address, or null (__get_free_page).</summary>
    public byte* GetFreePage(Gfp gfp) => GetFreePages(gfp, 0);

    /// <summary>Frees one page by address (free_page).</summary>
    public void FreePage(void* address) => FreePages(address, 0);

    /// <summary>Frees one page (__free_page).</summary>
    public void FreePage(PageFrame* page) => FreePages(page, 0);

    /// <summary>
    /// Turns a non-compound allocation of 2^<paramref name="order"/> pages into as many order-0 allocations,
    /// each freed on its own (split_page).
    /// </summary>
    public void SplitPage(PageFrame* page, int order)
    {
        ThrowIfNotFrame(page, "split_page");
        if ((page->FlagsAndZone & (uint)FreeCheckMask) != (uint)PageFlags.Allocated || page->Order != order || page->RefCount != 1)
            ThrowBadFree(page, order, "split_page");
        if (page->Has(PageFlags.Head))
            throw ReportMisuse(new BadPageException($"split_page: pfn 0x{page->Pfn:x} is a compound page.", page->Pfn, page->Describe()));
        if (_pageGuards) FreeGuardOf(page, order);
        long n = 1L << order;
        for (long i = 0; i < n; i++)
        {
            PageFrame* p = page + i;
            p->FlagsAndZone = (p->FlagsAndZone & ~PageFrame.FlagMask) | (uint)PageFlags.Allocated;
            p->_order = 0;
            p->_refcount = 1;
        }
    }

    /// <summary>Takes another reference to a live page (get_page); a tail page counts on its compound head.</summary>
    public void GetPage(PageFrame* page)
    {
        ThrowIfNotFrame(page, "get_page");
        PageFrame* head = PageFrame.CompoundHead(page);
        if (!head->Has(PageFlags.Allocated) || head->RefCount <= 0 || head->Has(PageFlags.Slab)) ThrowBadGet(head);
        Interlocked.Increment(ref head->_refcount);
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadGet(PageFrame* head)
    {
        InitFrame(head);
        if (head->Has(PageFlags.Slab))
            throw ReportMisuse(new BadPageException($"get_page: pfn 0x{head->Pfn:x} belongs to the slab allocator (its slab holds its only reference).", head->Pfn, head->Describe()));
        throw ReportMisuse(new BadPageException($"get_page: pfn 0x{head->Pfn:x} is not a live page.", head->Pfn, head->Describe()));
    }

    /// <summary>Drops a reference (put_page); the last one frees the whole allocation.</summary>
    public void PutPage(PageFrame* page)
    {
        ThrowIfNotFrame(page, "put_page");
        PageFrame* head = PageFrame.CompoundHead(page);
        FreePages(head, head->Order);
    }

    /// <summary>The reference count of the page's allocation (page_ref_count).</summary>
    public int PageRefCount(PageFrame* page)
    {
        ThrowIfNotFrame(page, "page_ref_count");
        PageFrame* head = PageFrame.CompoundHead(page);
        // A slab page's one reference is its slab's; small slabs keep their bitmap where the count would be.
        return head->Has(PageFlags.Slab) ? 1 : head->RefCount;
    }

    /// <summary>
    /// Fills the empty (zero) entries of <paramref name="pages"/> with order-0 pages (alloc_pages_bulk).
    /// Returns how many entries are populated afterwards; stops early when memory runs out.
    /// </summary>
    public int AllocPagesBulk(Gfp gfp, Span<nint> pages)
    {
        int populated = 0;
        for (int i = 0; i < pages.Length; i++)
        {
            if (pages[i] != 0) { populated++; continue; }
            PageFrame* page = AllocPages(gfp, 0);
            if (page == null) break;
            pages[i] = (nint)page;
            populated++;
        }
        return populated;
    }

    /// <summary>Frees every non-zero entry of <paramref name="pages"/> as an order-0 page and clears it.</summary>
    public void FreePagesBulk(Span<nint> pages)
    {
        for (int i = 0; i < pages.Length; i++)
        {
            if (pages[i] == 0) continue;
            FreePages((PageFrame*)pages[i], 0);
            pages[i] = 0;
        }
    }
}
