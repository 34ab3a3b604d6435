using Allocators.Physical;

namespace Allocators.Mmu;

public sealed unsafe partial class KernelAddressSpace
{
    // The direct map (init_memory_mapping): low memory at PAGE_OFFSET + physical address, in 1 GiB PUD leaves where a
    // whole gigabyte is low, online, host-contiguous and can never go offline (the flat arena), else in 2 MiB PMD
    // leaves. The PMD tables for every gigabyte that may ever hold low memory are made here, so that onlining a
    // section later (from the page allocator's hotplug lock, maybe inside an allocation) only writes entries.
    // Only the hotplug notifier changes direct-map entries after construction (serialized by the hotplug lock); the
    // page-table lock is not taken for them, since a thread that holds it may be the one allocating.

    private const ulong PagesPerGiB = VirtualAddress.PudSize >> VirtualAddress.PageShift;
    private const ulong PagesPer2MiB = VirtualAddress.PmdSize >> VirtualAddress.PageShift;
    private const PteFlags DirectMapProt = PteFlags.PageKernel | PteFlags.Huge;

    private ulong _lowPfnEnd;
    private Action<ulong, long, bool>? _directMapNotifier;

    /// <summary>
    /// high_memory: the first kernel address past the direct map. Low memory — every frame below
    /// <see cref="PhysicalMemoryOptions.LowMemoryLimit"/>, or all memory without the split — is mapped from
    /// <see cref="VirtualAddress.PageOffset"/> to here.
    /// </summary>
    public ulong HighMemory => VirtualAddress.PageOffset + (_lowPfnEnd << VirtualAddress.PageShift);

    /// <summary>PageHighMem: true for a frame above the low-memory limit, which has no direct-map address.</summary>
    public bool IsHighMem(PageFrame* page)
    {
        _memory.ThrowIfNotFrame(page, "PageHighMem");
        return page->Pfn >= _lowPfnEnd;
    }

    /// <summary>__pa: the physical address of a direct-map address.</summary>
    /// <exception cref="ArgumentException"><paramref name="va"/> is not in the direct map.</exception>
    public ulong PhysicalAddressOf(ulong va)
    {
        if (va < VirtualAddress.PageOffset || va >= HighMemory)
            throw new ArgumentException($"__pa: 0x{va:x} is not a direct-map address [0x{VirtualAddress.PageOffset:x}, 0x{HighMemory:x}).", nameof(va));
        return va - VirtualAddress.PageOffset;
    }

    /// <summary>__va: the direct-map address of low physical address <paramref name="pa"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="pa"/> is high memory or beyond memory.</exception>
    public ulong DirectMapAddressOf(ulong pa)
    {
        if (pa >> VirtualAddress.PageShift >= _lowPfnEnd)
            throw new ArgumentException($"__va: physical address 0x{pa:x} is above the direct map (high memory starts at 0x{_lowPfnEnd << VirtualAddress.PageShift:x}).", nameof(pa));
        return VirtualAddress.PageOffset + pa;
    }

    /// <summary>virt_to_page: the frame behind a direct-map address.</summary>
    /// <exception cref="ArgumentException"><paramref name="va"/> is not in the direct map or its memory is offline.</exception>
    public PageFrame* VirtToPage(ulong va)
    {
        PageFrame* page = _memory.PfnToPage(PhysicalAddressOf(va) >> VirtualAddress.PageShift);
        if (page == null) throw new ArgumentException($"virt_to_page: 0x{va:x} lies in memory that is offline.", nameof(va));
        return page;
    }

    /// <summary>
    /// page_address: the kernel address of a page — its direct-map address when it is low memory; for high memory
    /// the address of its current kmap, or 0 when it is not kmapped.
    /// </summary>
    public ulong PageAddress(PageFrame* page)
    {
        _memory.ThrowIfNotFrame(page, "page_address");
        ulong pfn = page->Pfn;
        if (pfn < _lowPfnEnd) return VirtualAddress.PageOffset + (pfn << VirtualAddress.PageShift);
        return PkmapAddressOf(page);
    }

    /// <summary>Builds the direct map at construction and registers for hotplug. Throws <see cref="OutOfMemoryException"/> when the tables cannot be had.</summary>
    private void MapDirectMap()
    {
        ulong maxPfn = _memory.MaxPfn;
        ulong limit = _pages.HasHighMem ? (ulong)_pages.HighStartPfn : maxPfn;
        _lowPfnEnd = Math.Min(limit, maxPfn);
        bool permanent = _memory.Model != MemoryModel.Sparse;
        lock (_ptl)
        {
            for (ulong gib = 0; gib * PagesPerGiB < _lowPfnEnd; gib++)
            {
                ulong first = gib * PagesPerGiB;
                ulong va = VirtualAddress.PageOffset + (first << VirtualAddress.PageShift);
                if (permanent && first + PagesPerGiB <= _lowPfnEnd && HostContiguous(first, PagesPerGiB))
                {
                    ulong* pud = AllocLowerTable(_pgd + VirtualAddress.PgdIndex(va), VirtualAddress.PudIndex(va), PteFlags.KernelPageTable);
                    if (pud == null) throw new OutOfMemoryException("init_memory_mapping: no memory for the direct map's PUD table.");
                    Volatile.Write(ref *pud, PageTableEntry.Make(first, DirectMapProt).Value);
                    TablePage(AlignToTable(pud))->Data0++;
                    continue;
                }
                if (AllocPmdSlot(va, PteFlags.KernelPageTable) == null)
                    throw new OutOfMemoryException("init_memory_mapping: no memory for the direct map's PMD tables.");
            }
        }
        for (int s = 0; s < _memory.MaxSections; s++)
        {
            if (_memory.IsSectionOnline(s)) SetDirectMap(_memory.SectionStartPfn(s), _memory.PagesPerSection, online: true);
        }
        _directMapNotifier = SetDirectMap;
        _pages.RegisterMemoryNotifier(_directMapNotifier);
    }

    private bool HostContiguous(ulong firstPfn, ulong pages)
    {
        byte* start = _memory.PfnToVirt(firstPfn);
        byte* last = _memory.PfnToVirt(firstPfn + pages - 1);
        return start != null && last != null && last - start == (long)((pages - 1) << VirtualAddress.PageShift);
    }

    /// <summary>
    /// The hotplug notifier: writes (or clears) the 2 MiB entries of the low part of [startPfn, startPfn + pages).
    /// Entries inside a 1 GiB leaf are already mapped. Going offline, the translations are flushed from every thread
    /// before the host memory goes.
    /// </summary>
    private void SetDirectMap(ulong startPfn, long pages, bool online)
    {
        ulong end = Math.Min(startPfn + (ulong)pages, _lowPfnEnd);
        bool changed = false;
        for (ulong pfn = startPfn & ~(PagesPer2MiB - 1); pfn < end; pfn += PagesPer2MiB)
        {
            ulong va = VirtualAddress.PageOffset + (pfn << VirtualAddress.PageShift);
            ulong* pud = TableOf(_pgd[VirtualAddress.PgdIndex(va)]) + VirtualAddress.PudIndex(va);
            if ((*pud & (ulong)PteFlags.Huge) != 0) continue;
            ulong* pmd = TableOf(*pud) + VirtualAddress.PmdIndex(va);
            ulong old = Volatile.Read(ref *pmd);
            if (online && old == 0)
            {
                Volatile.Write(ref *pmd, PageTableEntry.Make(pfn, DirectMapProt).Value);
                TablePage(AlignToTable(pmd))->Data0++;
            }
            else if (!online && old != 0)
            {
                Volatile.Write(ref *pmd, 0UL);
                TablePage(AlignToTable(pmd))->Data0--;
                changed = true;
            }
        }
        if (changed)
            Flush(VirtualAddress.PageOffset + (startPfn << VirtualAddress.PageShift), VirtualAddress.PageOffset + (end << VirtualAddress.PageShift), waitForAccesses: true);
    }

    private void UnregisterDirectMap()
    {
        if (_directMapNotifier != null) _pages.UnregisterMemoryNotifier(_directMapNotifier);
    }
}
