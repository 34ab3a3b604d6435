using System.Diagnostics;
using System.Runtime.CompilerServices;
using Allocators.Filemap;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

public sealed unsafe partial class AddressSpace
{
    /// <summary>Visits one present PMD entry's share [start, end) of a range.</summary>
    private delegate void PmdVisitor(ulong* pmdSlot, ulong start, ulong end);

    /// <summary>
    /// Calls <paramref name="visit"/> for every present PMD entry overlapping [start, end) of the user half, then,
    /// when <paramref name="gather"/> is given, frees PMD and PUD tables left empty (free_pgtables). Under the ptl.
    /// </summary>
    private void WalkPmds(ulong start, ulong end, PmdVisitor visit, TlbGather? gather)
    {
        Debug.Assert(_ptl.IsHeldByCurrentThread);
        for (ulong a = start; a < end;)
        {
            ulong* pgdSlot = _pgd + VirtualAddress.PgdIndex(a);
            ulong aEnd = Math.Min(end, AlignUp(a, VirtualAddress.PgdSize));
            if ((*pgdSlot & (ulong)PteFlags.Present) != 0)
            {
                ulong* pud = TableOf(*pgdSlot);
                for (ulong b = a; b < aEnd;)
                {
                    ulong* pudSlot = pud + VirtualAddress.PudIndex(b);
                    ulong bEnd = Math.Min(aEnd, AlignUp(b, VirtualAddress.PudSize));
                    if ((*pudSlot & (ulong)PteFlags.Present) != 0)
                    {
                        ulong* pmd = TableOf(*pudSlot);
                        for (ulong c = b; c < bEnd;)
                        {
                            ulong* pmdSlot = pmd + VirtualAddress.PmdIndex(c);
                            ulong cEnd = Math.Min(bEnd, AlignUp(c, VirtualAddress.PmdSize));
                            if (IsMapped(*pmdSlot)) visit(pmdSlot, c, cEnd);
                            c = cEnd;
                        }
                        if (gather != null && TablePage(pmd)->Data0 == 0) FreeTableEntry(pudSlot, gather);
                    }
                    b = bEnd;
                }
                if (gather != null && TablePage(pud)->Data0 == 0) FreeTableEntry(pgdSlot, gather);
            }
            a = aEnd;
        }
    }

    /// <summary>The next multiple of <paramref name="size"/> above <paramref name="a"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong AlignUp(ulong a, ulong size) => (a & ~(size - 1)) + size;

    /// <summary>Clears an entry that points at an (empty) table and queues the table for freeing after the flush.</summary>
    private void FreeTableEntry(ulong* slot, TlbGather gather)
    {
        ulong e = Interlocked.Exchange(ref *slot, 0);
        gather.Tables.Add((nint)TablePage(TableOf(e)));
        TablePage(AlignToTable(slot))->Data0--;
    }

    /// <summary>
    /// zap_page_range: clears every entry in [start, end), dropping mapcounts and RSS now and queueing the page
    /// references for release after the flush; frees page tables left empty. A page-cache page of
    /// <paramref name="file"/> (the area's vm_file) whose entry is dirty gets PG_dirty first, so what was written
    /// through the mapping reaches the file. Under the mmap_lock for writing; with <paramref name="freeTables"/> false
    /// (unmap_mapping_range, which runs beside faults under the mmap_lock for reading) the tables stay.
    /// </summary>
    private void ZapRange(ulong start, ulong end, TlbGather gather, FileMapping? file, bool freeTables = true)
    {
        if (end <= start) return;
        gather.AddRange(start, end);
        lock (_ptl)
        {
            WalkPmds(start, end, (pmdSlot, s, e) =>
            {
                ulong pmd = *pmdSlot;
                if ((pmd & (ulong)PteFlags.Huge) != 0)
                {
                    if ((s & (VirtualAddress.PmdSize - 1)) == 0 && e - s == VirtualAddress.PmdSize)
                    {
                        Interlocked.Exchange(ref *pmdSlot, 0);
                        TablePage(AlignToTable(pmdSlot))->Data0--;
                        gather.Tables.Add((nint)WithdrawTable(pmdSlot));
                        PageFrame* head = _memory.PfnToPage(PageTableEntry.PfnOf(pmd));
                        Interlocked.Decrement(ref head->_mapcount);
                        AddRss(anon: true, -VirtualAddress.HugePagePages);
                        GatherPage(gather, head);
                        return;
                    }
                    SplitHugePmd(pmdSlot, s & ~(VirtualAddress.PmdSize - 1));
                    pmd = *pmdSlot;
                }
                ulong* table = TableOf(pmd);
                PageFrame* tablePage = TablePage(table);
                for (ulong va = s; va < e; va += VirtualAddress.PageSize)
                {
                    ulong* slot = table + VirtualAddress.PteIndex(va);
                    if (*slot == 0) continue;
                    ulong old = Interlocked.Exchange(ref *slot, 0);
                    tablePage->Data0--;
                    if (SwapEntry.IsSwapPte(old))
                    {
                        _kernel.Swap.FreeSwapAndCache(SwapEntry.FromPte(old));
                        Interlocked.Decrement(ref _swapEnts);
                        continue;
                    }
                    if (!IsMapped(old) || (old & (ulong)PteFlags.Special) != 0) continue;
                    PageFrame* page = _memory.PfnToPage(PageTableEntry.PfnOf(old));
                    if ((old & (ulong)PteFlags.Dirty) != 0 && IsFilePage(page)) file?.SetPageDirty(page);
                    Interlocked.Decrement(ref page->_mapcount);
                    AddRssFor(page, -1, file);
                    GatherPage(gather, page);
                }
                if (freeTables && tablePage->Data0 == 0) FreeTableEntry(pmdSlot, gather);
            }, freeTables ? gather : null);
        }
    }

    /// <summary>Frees every user-half table (exit_mmap's free_pgtables); the range must already be zapped.</summary>
    private void FreeAllUserTables(TlbGather gather)
    {
        lock (_ptl)
        {
            for (int i = 0; i < VirtualAddress.KernelPgdIndex; i++)
            {
                ulong pgd = _pgd[i];
                if ((pgd & (ulong)PteFlags.Present) == 0) continue;
                ulong* pud = TableOf(pgd);
                for (int j = 0; j < VirtualAddress.EntriesPerTable; j++)
                {
                    if ((pud[j] & (ulong)PteFlags.Present) == 0) continue;
                    ulong* pmd = TableOf(pud[j]);
                    for (int k = 0; k < VirtualAddress.EntriesPerTable; k++)
                    {
                        if ((pmd[k] & (ulong)PteFlags.Present) == 0 || (pmd[k] & (ulong)PteFlags.Huge) != 0) continue;
                        FreeTableEntry(pmd + k, gather);
                    }
                    FreeTableEntry(pud + j, gather);
                }
                FreeTableEntry(_pgd + i, gather);
            }
        }
    }

    /// <summary>Queues a page reference for release after the flush; a full batch is flushed and released at once (tlb_flush_mmu).</summary>
    private void GatherPage(TlbGather gather, PageFrame* page)
    {
        gather.Pages.Add((nint)page);
        if (gather.Pages.Count < TlbGather.BatchPages) return;
        Flush(gather.Start, gather.End, waitForAccesses: true);
        ReleaseGatheredPages(gather);
    }

    /// <summary>
    /// free_pages_and_swap_cache: drops the gathered mappings' references; a page in the swap cache that nothing maps
    /// and no swap entry holds leaves the cache first (it would only wait there for reclaim).
    /// </summary>
    private void ReleaseGatheredPages(TlbGather gather)
    {
        foreach (nint p in gather.Pages)
        {
            var page = (PageFrame*)p;
            if (page->Has(PageFlags.SwapCache) && Volatile.Read(ref page->_mapcount) == 0) _kernel.Swap.FreeSwapCache(page);
            _pages.PutPage(page);
        }
        gather.Pages.Clear();
    }

    /// <summary>tlb_finish_mmu: flushes the gathered range (waiting for other threads), then frees pages and tables.</summary>
    private void FinishGather(TlbGather gather)
    {
        if (gather.NeedsFlush || gather.Tables.Count > 0)
            Flush(gather.NeedsFlush ? gather.Start : 0, gather.NeedsFlush ? gather.End : ulong.MaxValue, waitForAccesses: true);
        else
            FlushBatchedPending();
        ReleaseGatheredPages(gather);
        foreach (nint t in gather.Tables) FreeTablePage((PageFrame*)t);
        gather.Tables.Clear();
        gather.Start = ulong.MaxValue;
        gather.End = 0;
    }

    /// <summary>
    /// Splits a huge PMD mapping into a table of 512 PTEs (split_huge_pmd) and the order-9 page into 512 order-0
    /// pages (split_huge_page), which join the inactive anonymous LRU; huge pages are never shared here, so the split
    /// page is exclusive. The table is the one deposited when the huge page was mapped, so a split needs no memory and
    /// cannot fail. Under the ptl.
    /// </summary>
    private void SplitHugePmd(ulong* pmdSlot, ulong haddr)
    {
        Debug.Assert(_ptl.IsHeldByCurrentThread);
        ulong pmd = Volatile.Read(ref *pmdSlot);
        ulong pfn = PageTableEntry.PfnOf(pmd);
        PageFrame* head = _memory.PfnToPage(pfn);
        PageFrame* tablePage = WithdrawTable(pmdSlot);
        var table = (ulong*)_pages.AddressOf(tablePage);
        ulong prot = pmd & ~(ulong)PteFlags.PfnMask & ~(ulong)PteFlags.Huge;
        for (int i = 0; i < VirtualAddress.HugePagePages; i++) table[i] = PageTableEntry.Make(pfn + (ulong)i, (PteFlags)prot).Value;
        tablePage->Data0 = VirtualAddress.HugePagePages;
        nuint family = head->Private;
        ulong index = head->Data0;
        _pages.SplitPage(head, VirtualAddress.HugePageOrder);
        int node = _pages.NodeOf(head);
        for (int i = 0; i < VirtualAddress.HugePagePages; i++)
        {
            // Each becomes an anonymous page of the family at its own linear index, on the LRU, reclaimable.
            PageFrame* page = head + i;
            page->FlagsAndZone |= (uint)(PageFlags.Anon | PageFlags.SwapBacked);
            page->_mapcount = 1;
            page->Private = family;
            page->Data0 = index + (ulong)i;
            _pages.Lru.Add(page, node);
        }
        // Same frames, same permissions: translations stay valid, but x86 requires a flush when the page size changes.
        Volatile.Write(ref *pmdSlot, PageTableEntry.Make(tablePage->Pfn, PteFlags.PageTable).Value);
        Flush(haddr, haddr + VirtualAddress.PmdSize, waitForAccesses: false);
        Interlocked.Increment(ref _stats.ThpSplitPmd);
    }

    /// <summary>
    /// pgtable_trans_huge_deposit: keeps <paramref name="table"/> (a page table no walker can reach) with the PMD
    /// table that maps a huge page at <paramref name="pmdSlot"/>, counted as a page table like the kernel's. The PMD
    /// table's frame heads a stack of them in <see cref="PageFrame.Private"/> (pmd_huge_pte), linked through
    /// <see cref="PageFrame.Next"/>. Under the ptl.
    /// </summary>
    private void DepositTable(ulong* pmdSlot, PageFrame* table)
    {
        Debug.Assert(_ptl.IsHeldByCurrentThread);
        PageFrame* pmdTable = TablePage(AlignToTable(pmdSlot));
        table->Next = (PageFrame*)pmdTable->Private;
        pmdTable->Private = (nuint)table;
    }

    /// <summary>pgtable_trans_huge_withdraw: takes back a table deposited with the PMD table of <paramref name="pmdSlot"/>. Under the ptl.</summary>
    private PageFrame* WithdrawTable(ulong* pmdSlot)
    {
        Debug.Assert(_ptl.IsHeldByCurrentThread);
        PageFrame* pmdTable = TablePage(AlignToTable(pmdSlot));
        var table = (PageFrame*)pmdTable->Private;
        if (table == null)
            throw new InvalidOperationException($"pgtable_trans_huge_withdraw: the PMD table at pfn 0x{pmdTable->Pfn:x} holds no deposited table for a huge mapping.");
        pmdTable->Private = (nuint)table->Next;
        table->Next = null;
        return table;
    }

    /// <summary>
    /// For the huge-page split shrinker: splits up to <paramref name="max"/> huge mappings of this address space so
    /// that their pages join the LRU. Trylocks only (it runs inside allocations); a huge page someone holds a
    /// reference to is left whole. Returns how many it split.
    /// </summary>
    internal int TrySplitHugePages(int max)
    {
        int split = 0;
        if (!TryEnterRmap()) return 0;
        try
        {
            for (VmArea? v = _vmas.First; v != null && split < max; v = v.Next)
            {
                if ((v.Flags & VmFlags.HugePage) == 0 || v.IsShared || v.File != null) continue;
                for (ulong haddr = (v.Start + VirtualAddress.PmdSize - 1) & ~(VirtualAddress.PmdSize - 1);
                     haddr + VirtualAddress.PmdSize <= v.End && split < max; haddr += VirtualAddress.PmdSize)
                {
                    ulong* pmdSlot = FindPmdSlot(haddr);
                    if (pmdSlot == null) continue;
                    ulong pmd = Volatile.Read(ref *pmdSlot);
                    if ((pmd & (ulong)(PteFlags.Huge | PteFlags.Present)) != (ulong)(PteFlags.Huge | PteFlags.Present)) continue;
                    if (_memory.PfnToPage(PageTableEntry.PfnOf(pmd))->RefCount != 1) continue;
                    SplitHugePmd(pmdSlot, haddr);
                    split++;
                }
            }
        }
        finally { ExitRmap(); }
        return split;
    }

    /// <summary>Splits every huge PMD overlapping [start, end) (before fork, mremap, or a partial change).</summary>
    private void SplitHugeRange(ulong start, ulong end)
    {
        lock (_ptl)
        {
            WalkPmds(start, end, (pmdSlot, s, _) =>
            {
                if ((*pmdSlot & (ulong)PteFlags.Huge) != 0) SplitHugePmd(pmdSlot, s & ~(VirtualAddress.PmdSize - 1));
            }, null);
        }
    }

    /// <summary>
    /// change_protection: rewrites the protection of every mapped entry in [start, end) for an area whose flags are
    /// now <paramref name="flags"/>, keeping pfn, Accessed, Dirty and the software bits, then flushes. With
    /// <paramref name="writeNotify"/> (a shared file mapping) only dirty entries may stay writable: a clean one must
    /// fault on its first write so the page is marked dirty.
    /// </summary>
    private void ChangeProtection(ulong start, ulong end, VmFlags flags, bool writeNotify = false)
    {
        PteFlags prot = VmPageProt(flags);
        ulong keepDirtyWritable = 0;
        if (writeNotify && (prot & PteFlags.ReadWrite) != 0)
        {
            prot &= ~PteFlags.ReadWrite;
            keepDirtyWritable = (ulong)PteFlags.ReadWrite;
        }
        bool privateWritable = (flags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
        bool changed = false;
        lock (_ptl)
        {
            WalkPmds(start, end, (pmdSlot, s, e) =>
            {
                ulong pmd = *pmdSlot;
                if ((pmd & (ulong)PteFlags.Huge) != 0)
                {
                    if ((s & (VirtualAddress.PmdSize - 1)) == 0 && e - s == VirtualAddress.PmdSize)
                    {
                        // Huge pages are exclusive: a private writable area keeps them writable.
                        ulong extra = (ulong)PteFlags.Huge | (privateWritable && (prot & PteFlags.Present) != 0 ? (ulong)PteFlags.ReadWrite : 0);
                        changed |= UpdateEntry(pmdSlot, prot, extra);
                        return;
                    }
                    SplitHugePmd(pmdSlot, s & ~(VirtualAddress.PmdSize - 1));
                    pmd = *pmdSlot;
                }
                ulong* table = TableOf(pmd);
                for (ulong va = s; va < e; va += VirtualAddress.PageSize)
                {
                    ulong* slot = table + VirtualAddress.PteIndex(va);
                    ulong old = Volatile.Read(ref *slot);
                    if (!IsMapped(old)) continue;
                    ulong extra = (old & (ulong)PteFlags.Dirty) != 0 ? keepDirtyWritable : 0;
                    if (privateWritable && (prot & PteFlags.Present) != 0 && (old & (ulong)PteFlags.Special) == 0 && (old & (ulong)PteFlags.Dirty) != 0)
                    {
                        // can_change_pte_writable: an exclusive anonymous page may be written without a fault.
                        PageFrame* page = _memory.PfnToPage(PageTableEntry.PfnOf(old));
                        if (page->Has(PageFlags.Anon) && page->RefCount == 1) extra = (ulong)PteFlags.ReadWrite;
                    }
                    changed |= UpdateEntry(slot, prot, extra);
                }
            }, null);
            if (changed) Flush(start, end, waitForAccesses: true);
            else FlushBatchedPending();
        }
    }

    /// <summary>pte_modify with compare-and-swap (walkers may set Accessed/Dirty meanwhile). True when the entry changed.</summary>
    private static bool UpdateEntry(ulong* slot, PteFlags prot, ulong extra)
    {
        while (true)
        {
            ulong old = Volatile.Read(ref *slot);
            ulong value = new PageTableEntry(old).Modify(prot).Value | extra;
            if (value == old) return false;
            if (Interlocked.CompareExchange(ref *slot, value, old) == old) return true;
        }
    }

    /// <summary>vm_get_page_prot: the entry protection for an area's flags (private writable areas get no RW: PAGE_COPY).</summary>
    private static PteFlags VmPageProt(VmFlags flags)
    {
        if ((flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0) return PteFlags.PageNone;
        PteFlags prot = PteFlags.Present | PteFlags.User;
        if ((flags & VmFlags.Exec) == 0) prot |= PteFlags.NoExecute;
        if ((flags & (VmFlags.Write | VmFlags.Shared)) == (VmFlags.Write | VmFlags.Shared)) prot |= PteFlags.ReadWrite;
        return prot;
    }

    /// <summary>
    /// A page-cache page: neither anonymous nor shmem (both are swap-backed). The zero page never gets here (its
    /// entries are special).
    /// </summary>
    private static bool IsFilePage(PageFrame* page) => (page->FlagsAndZone & (uint)(PageFlags.Anon | PageFlags.SwapBacked)) == 0;

    /// <summary>
    /// add_mm_counter for one more (<paramref name="pages"/> &gt; 0) or one fewer mapping of <paramref name="page"/>:
    /// MM_ANONPAGES, MM_SHMEMPAGES, or MM_FILEPAGES with nr_mapped of <paramref name="file"/>'s cache.
    /// </summary>
    private void AddRssFor(PageFrame* page, long pages, FileMapping? file)
    {
        if (!IsFilePage(page))
        {
            AddRss(page->Has(PageFlags.Anon), pages);
            return;
        }
        Debug.Assert(file != null, "a page-cache page mapped outside a file area");
        Interlocked.Add(ref _rssFile, pages);
        Interlocked.Add(ref _stats.NrFileMapped, pages);
        if (file != null) Interlocked.Add(ref file.Cache.Stats.NrMapped, pages);
    }

    private void AddRss(bool anon, long pages)
    {
        if (anon)
        {
            Interlocked.Add(ref _rssAnon, pages);
            Interlocked.Add(ref _stats.NrAnonPages, pages);
        }
        else
        {
            Interlocked.Add(ref _rssShmem, pages); // nr_shmem is the objects' count: a page mapped twice is one page
        }
    }
}
