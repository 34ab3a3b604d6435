using Allocators.Physical;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>Pages currently used as page tables (vmstat nr_page_table_pages, meminfo PageTables), counted per zone as the kernel's NR_PAGETABLE.</summary>
    public long NrPageTablePages
    {
        get
        {
            long sum = 0;
            for (int z = 0; z < _zoneCount; z++) sum += Interlocked.Read(ref _zones[z].PageTablePages);
            return sum;
        }
    }

    /// <summary>
    /// Allocates one zeroed page for a page table and marks it <see cref="PageFlags.PageTable"/> (pagetable_alloc).
    /// <see cref="PageFrame.Data0"/> starts at 0 for the owner's used-entry count. Returns null when out of memory.
    /// </summary>
    public PageFrame* PageTableAlloc(Gfp gfp)
    {
        PageFrame* page = AllocPages(gfp | Gfp.Zero, 0);
        if (page == null) return null;
        page->FlagsAndZone |= (uint)PageFlags.PageTable;
        page->Data0 = 0;
        page->Data1 = 0;
        Interlocked.Increment(ref _zones[page->ZoneId].PageTablePages);
        return page;
    }

    /// <summary>Frees a page from <see cref="PageTableAlloc"/> (pagetable_free).</summary>
    /// <exception cref="Common.BadPageException">The page is not a live page-table page.</exception>
    public void PageTableFree(PageFrame* page)
    {
        ThrowIfNotFrame(page, "pagetable_free");
        if (!page->Has(PageFlags.PageTable))
        {
            InitFrame(page);
            throw ReportMisuse(new Common.BadPageException($"pagetable_free: pfn 0x{page->Pfn:x} is not a page-table page.", page->Pfn, page->Describe()));
        }
        page->FlagsAndZone &= ~(ulong)(uint)PageFlags.PageTable;
        page->Data0 = 0;
        page->Data1 = 0;
        Interlocked.Decrement(ref _zones[page->ZoneId].PageTablePages);
        FreePages(page, 0);
    }
}
