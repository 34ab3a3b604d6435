using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Mmu;

/// <summary>
/// The kernel's address space (init_mm with swapper_pg_dir): the reference page tables of the kernel half
/// (from <see cref="VirtualAddress.KernelStart"/>), which vmalloc maps pages into. Every process PGD shares the
/// kernel-half entries of this PGD: they are copied when a process is created, and an entry added later is copied
/// into a process PGD when that process faults on it in kernel mode (vmalloc_sync). Also owns the system-wide MMU
/// counters and the shared zero page.
/// </summary>
/// <remarks>
/// Thread-safe. Accesses through this object are kernel-mode (supervisor) accesses. A fault here is never fixed:
/// it produces an oops (<see cref="KernelOopsException"/>, also appended to <see cref="Log"/>), except through
/// <see cref="CopyFromKernelNoFault"/>. Kernel page tables are kept until disposal (vunmap leaves them in place),
/// because every process PGD may point at them; the one exception is an empty PTE table that a 2 MiB mapping
/// replaces (<see cref="MapKernelHugePmd"/>), freed only after every thread of the kernel and of every live process
/// is known to be out of any walk that could still reach it. Mapping a page does not take a reference to it: the
/// caller (vmalloc) owns the pages. Dispose only after every <see cref="AddressSpace"/> created with it.
/// </remarks>
public sealed unsafe partial class KernelAddressSpace : VirtualAddressSpace
{
    private readonly List<string> _log = new();
    private readonly HashSet<AddressSpace> _processes = new(ReferenceEqualityComparer.Instance);
    private PageFrame* _zeroPage;
    private int _nextPid = 1;
    private int _oopsCount;
    private int _liveProcesses;
    private Func<Gfp, int, bool>? _oomKiller; // the delegate registered with the page allocator (to unregister it)

    /// <summary>Creates the kernel page tables over <paramref name="pages"/>.</summary>
    public KernelAddressSpace(PageAllocator pages)
        : base(pages, userMode: false, VirtualAddress.KernelStart, ulong.MaxValue)
    {
        Statistics = new MmuStatistics(pages);
        _zeroPage = pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
        if (_zeroPage == null)
        {
            base.Dispose(true);
            throw new OutOfMemoryException("KernelAddressSpace: no memory for the zero page.");
        }
        _zeroPage->FlagsAndZone |= (uint)PageFlags.Reserved;
        try
        {
            MapDirectMap();
            SetUpFixmap();
            SetUpPkmap();
            _oomKiller = OutOfMemory;
            pages.SetOomKiller(_oomKiller);
            if (pages.HasHighMem) pages.SetHighmemMapper(this);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>System-wide MMU counters (the MMU's part of /proc/vmstat).</summary>
    public MmuStatistics Statistics { get; }

    /// <summary>The kernel log (dmesg) of oopses, newest last.</summary>
    public IReadOnlyList<string> Log
    {
        get { lock (_log) return _log.ToArray(); }
    }

    /// <summary>Address spaces created with this kernel and not yet disposed.</summary>
    public int LiveProcesses => Volatile.Read(ref _liveProcesses);

    /// <summary>The shared zero page (ZERO_PAGE): mapped read-only by read faults on private anonymous memory.</summary>
    public PageFrame* ZeroPage => _zeroPage;

    internal ulong ZeroPfn => _zeroPage->Pfn;

    internal int AllocatePid(AddressSpace process)
    {
        lock (_processes) _processes.Add(process);
        Interlocked.Increment(ref _liveProcesses);
        return Interlocked.Increment(ref _nextPid);
    }

    internal void ProcessExited(AddressSpace process)
    {
        lock (_processes) _processes.Remove(process);
        Interlocked.Decrement(ref _liveProcesses);
    }

    /// <summary>The kernel PGD entry <paramref name="index"/> (256..511), as processes copy it.</summary>
    internal ulong ReferencePgdEntry(int index) => Volatile.Read(ref _pgd[index]);

    /// <summary>
    /// Maps <paramref name="page"/> at kernel address <paramref name="va"/> with protection <paramref name="prot"/>
    /// (e.g. <see cref="PteFlags.PageKernel"/>), allocating page tables as needed (vmap_pte_range).
    /// </summary>
    /// <exception cref="ArgumentException">The address is not a page-aligned kernel address, or the protection is not present or has the User bit.</exception>
    /// <exception cref="InvalidOperationException">The address is already mapped.</exception>
    /// <exception cref="OutOfMemoryException">No memory for a page table.</exception>
    public void MapKernelPage(ulong va, PageFrame* page, PteFlags prot)
    {
        if (page == null) throw new ArgumentNullException(nameof(page));
        nint one = (nint)page;
        MapKernelPages(va, new ReadOnlySpan<nint>(&one, 1), prot);
    }

    /// <summary>Maps consecutive pages starting at <paramref name="va"/> (vmap): entry i of <paramref name="pages"/> is a PageFrame*.</summary>
    /// <exception cref="ArgumentException">Bad address, protection or a null page.</exception>
    /// <exception cref="InvalidOperationException">Part of the range is already mapped; nothing is mapped then.</exception>
    /// <exception cref="OutOfMemoryException">No memory for a page table; nothing is mapped then (the tables made on the
    /// way stay, as kernel tables do).</exception>
    public void MapKernelPages(ulong va, ReadOnlySpan<nint> pages, PteFlags prot)
    {
        ThrowIfDisposed();
        ValidateKernelRange(va, (ulong)pages.Length * VirtualAddress.PageSize);
        if ((prot & PteFlags.Present) == 0 || (prot & PteFlags.User) != 0 || (prot & PteFlags.Huge) != 0)
            throw new ArgumentException($"MapKernelPage 0x{va:x}: protection {prot} must be present, supervisor-only and not huge.", nameof(prot));
        for (int i = 0; i < pages.Length; i++)
        {
            if (!_memory.IsValidFrame((PageFrame*)pages[i]))
                throw new ArgumentException($"MapKernelPage 0x{va + (ulong)i * 4096:x}: page {i} (0x{pages[i]:x}) is not a page frame of this memory.", nameof(pages));
        }
        int mapped = 0;
        lock (_ptl)
        {
            for (int i = 0; i < pages.Length; i++)
            {
                ulong a = va + (ulong)i * VirtualAddress.PageSize;
                ulong* pmd = FindPmdSlot(a);
                ulong pmdEntry = pmd == null ? 0 : *pmd;
                if ((pmdEntry & (ulong)PteFlags.Present) == 0) continue;
                if ((pmdEntry & (ulong)PteFlags.Huge) != 0)
                    throw new InvalidOperationException($"vmap: kernel address 0x{a:x} is already mapped by a 2 MiB entry (PMD {pmdEntry:x}).");
                ulong pte = TableOf(pmdEntry)[VirtualAddress.PteIndex(a)];
                if (pte != 0)
                    throw new InvalidOperationException($"vmap: kernel address 0x{a:x} is already mapped (PTE {pte:x}).");
            }
            for (; mapped < pages.Length; mapped++)
            {
                ulong* slot = AllocPteSlot(va + (ulong)mapped * VirtualAddress.PageSize, PteFlags.KernelPageTable);
                if (slot == null) break;
                var page = (PageFrame*)pages[mapped];
                Volatile.Write(ref *slot, PageTableEntry.Make(page->Pfn, prot).Value);
                TablePage(AlignToTable(slot))->Data0++;
            }
        }
        if (mapped == pages.Length) return;
        // The caller cannot tell how far the call got: what it mapped goes again.
        if (mapped > 0) UnmapKernelRange(va, (ulong)mapped * VirtualAddress.PageSize);
        throw new OutOfMemoryException($"vmap: no memory for a page table at 0x{va + (ulong)mapped * VirtualAddress.PageSize:x}.");
    }

    /// <summary>
    /// Maps the 2 MiB block of 512 physically contiguous pages that starts at <paramref name="page"/> with one PMD
    /// entry (PSE set) at the 2 MiB-aligned kernel address <paramref name="va"/> (vmap_try_huge_pmd), allocating the
    /// PUD and PMD tables as needed. When the PMD slot still points at a PTE table left by earlier 4 KiB mappings
    /// (vunmap keeps kernel tables) and that table is empty, the table is unhooked, the TLBs are flushed, and the
    /// table is freed before the 2 MiB entry goes in (pmd_free_pte_page).
    /// </summary>
    /// <returns>
    /// True when the 2 MiB entry is installed; false, changing nothing, when the slot's PTE table still maps something
    /// (the caller may map the block with 4 KiB entries instead).
    /// </returns>
    /// <exception cref="ArgumentException">The address is not a 2 MiB-aligned kernel address, the block is not a
    /// 2 MiB-aligned run of frames of this memory, or the protection is not present or has the User bit.</exception>
    /// <exception cref="InvalidOperationException">A 2 MiB entry already maps the address.</exception>
    /// <exception cref="OutOfMemoryException">No memory for a PUD or PMD table.</exception>
    public bool MapKernelHugePmd(ulong va, PageFrame* page, PteFlags prot)
    {
        ThrowIfDisposed();
        if (page == null) throw new ArgumentNullException(nameof(page));
        ValidateKernelRange(va, VirtualAddress.PmdSize);
        if ((va & (VirtualAddress.PmdSize - 1)) != 0)
            throw new ArgumentException($"MapKernelHugePmd 0x{va:x}: the address is not 2 MiB aligned.", nameof(va));
        if ((prot & PteFlags.Present) == 0 || (prot & PteFlags.User) != 0)
            throw new ArgumentException($"MapKernelHugePmd 0x{va:x}: protection {prot} must be present and supervisor-only.", nameof(prot));
        if (!_memory.IsValidFrame(page))
            throw new ArgumentException($"MapKernelHugePmd 0x{va:x}: 0x{(nuint)page:x} is not a page frame of this memory.", nameof(page));
        ulong pfn = page->Pfn;
        if ( (pfn & (VirtualAddress.HugePagePages - 1)) != 0
            || _memory.PfnToPage(pfn + VirtualAddress.HugePagePages - 1) != page + (VirtualAddress.HugePagePages - 1))
            throw new ArgumentException($"MapKernelHugePmd 0x{va:x}: pfn 0x{pfn:x} does not start a 2 MiB-aligned block of this memory.", nameof(page));
        ulong entry = PageTableEntry.Make(pfn, prot | PteFlags.Huge).Value;
        lock (_ptl)
        {
            ulong* slot = AllocPmdSlot(va, PteFlags.KernelPageTable);
            if (slot == null) throw new OutOfMemoryException($"vmap: no memory for a page table at 0x{va:x}.");
            ulong old = *slot;
            if ((old & (ulong)PteFlags.Present) == 0)
            {
                Volatile.Write(ref *slot, entry);
                TablePage(AlignToTable(slot))->Data0++;
                return true;
            }
            if ((old & (ulong)PteFlags.Huge) != 0)
                throw new InvalidOperationException($"vmap: kernel address 0x{va:x} is already mapped by a 2 MiB entry (PMD {old:x}).");
            PageFrame* table = TablePage(TableOf(old));
            if (table->Data0 != 0) return false;
            // pmd_free_pte_page: unhook the empty table, make sure no walker can still be inside it, free it.
            Volatile.Write(ref *slot, 0);
            QuiesceWalkers(va, va + VirtualAddress.PmdSize);
            FreeTablePage(table);
            Volatile.Write(ref *slot, entry); // the PMD table's count of used entries is unchanged: one for one
            return true;
        }
    }

    /// <summary>
    /// After an entry of the shared kernel tables was unhooked: flushes the kernel TLBs and waits until no thread of
    /// the kernel or of any live process (whose PGDs share these tables) is still inside a walk that began before.
    /// </summary>
    private void QuiesceWalkers(ulong start, ulong end)
    {
        Flush(start, end, waitForAccesses: true);
        lock (_processes)
        {
            foreach (AddressSpace process in _processes) process.WaitForKernelWalks(start, end);
        }
    }

    /// <summary>
    /// Clears the kernel mappings in [<paramref name="va"/>, <paramref name="va"/> + <paramref name="size"/>) and
    /// flushes the TLBs (vunmap_range + flush_tlb_kernel_range). The pages stay the caller's. Page tables stay.
    /// </summary>
    /// <returns>The number of pages that were mapped.</returns>
    public int UnmapKernelRange(ulong va, ulong size)
    {
        int cleared = UnmapKernelRangeNoFlush(va, size);
        if (cleared > 0) FlushTlbRange(va, va + size);
        return cleared;
    }

    /// <summary>
    /// Clears the kernel mappings in the range without flushing (vunmap_range_noflush), for callers that batch the
    /// flush of many ranges (lazy vmap purging): until <see cref="VirtualAddressSpace.FlushTlbRange"/> or
    /// <see cref="VirtualAddressSpace.FlushTlbAll"/> returns, threads may still reach the old pages through their TLB,
    /// so the pages must not be reused before that.
    /// </summary>
    /// <returns>The number of 4 KiB pages that were mapped (512 for each 2 MiB entry).</returns>
    /// <exception cref="ArgumentException">The range is not page aligned, not in the kernel half, or covers only part
    /// of a 2 MiB mapping; nothing is unmapped then.</exception>
    public int UnmapKernelRangeNoFlush(ulong va, ulong size)
    {
        ThrowIfDisposed();
        ValidateKernelRange(va, size);
        if (size == 0) return 0;
        ulong end = va + size;
        int cleared = 0;
        lock (_ptl)
        {
            // Only the first and the last 2 MiB entry can be partly covered; refuse before changing anything.
            ThrowIfSplitsHugePmd(va, va, end);
            ThrowIfSplitsHugePmd(end - VirtualAddress.PageSize, va, end);
            for (ulong a = va; a < end;)
            {
                ulong* pmd = FindPmdSlot(a);
                ulong pmdEnd = (a & ~(VirtualAddress.PmdSize - 1)) + VirtualAddress.PmdSize; // 0 past the top
                ulong stop = pmdEnd - 1 >= end - 1 ? end : pmdEnd;
                if (pmd == null || (*pmd & (ulong)PteFlags.Present) == 0)
                {
                    a = stop;
                    continue;
                }
                if ((*pmd & (ulong)PteFlags.Huge) != 0)
                {
                    // vunmap_pmd_range's pmd_clear_huge: one entry, 512 pages; the PMD table loses one used entry.
                    Interlocked.Exchange(ref *pmd, 0);
                    TablePage(AlignToTable(pmd))->Data0--;
                    cleared += VirtualAddress.HugePagePages;
                    a = stop;
                    continue;
                }
                ulong* table = TableOf(*pmd);
                PageFrame* tablePage = TablePage(table);
                for (; a < stop; a += VirtualAddress.PageSize)
                {
                    ulong* slot = table + VirtualAddress.PteIndex(a);
                    if (*slot == 0) continue;
                    Interlocked.Exchange(ref *slot, 0);
                    tablePage->Data0--;
                    cleared++;
                }
            }
        }
        return cleared;
    }

    /// <summary>Throws when the 2 MiB entry mapping <paramref name="a"/> (if any) reaches outside [<paramref name="va"/>, <paramref name="end"/>).</summary>
    private void ThrowIfSplitsHugePmd(ulong a, ulong va, ulong end)
    {
        ulong* pmd = FindPmdSlot(a);
        if (pmd == null || (*pmd & ((ulong)PteFlags.Present | (ulong)PteFlags.Huge)) != ((ulong)PteFlags.Present | (ulong)PteFlags.Huge)) return;
        ulong hstart = a & ~(VirtualAddress.PmdSize - 1);
        if (hstart < va || hstart + (VirtualAddress.PmdSize - 1) > end - 1)
            throw new ArgumentException($"vunmap: 0x{va:x} + 0x{end - va:x} covers only part of the 2 MiB mapping at 0x{hstart:x}.", nameof(va));
    }

    /// <summary>The page mapped at kernel address <paramref name="va"/>, or null (vmalloc_to_page).</summary>
    public PageFrame* TranslateToPage(ulong va)
    {
        PageTableEntry e = GetPte(va);
        return e.Present ? _memory.PfnToPage(e.Pfn + (e.Huge ? (ulong)VirtualAddress.PteIndex(va) : 0)) : null;
    }

    /// <summary>
    /// True when the reference tables map <paramref name="va"/> (present 4 KiB or 2 MiB leaf). Takes the page-table
    /// lock, so it never reads a table being freed; for fault handlers, which run outside any access region.
    /// </summary>
    internal bool MapsAddress(ulong va)
    {
        lock (_ptl) return !IsDisposed && GetPte(va).Present;
    }

    /// <summary>The pfn mapped at kernel address <paramref name="va"/>, or <see cref="ulong.MaxValue"/> (vmalloc_to_pfn).</summary>
    public ulong TranslateToPfn(ulong va)
    {
        PageFrame* page = TranslateToPage(va);
        return page == null ? ulong.MaxValue : page->Pfn;
    }

    /// <summary>
    /// Copies from a kernel address without oopsing on a bad one (copy_from_kernel_nofault). Returns false when a
    /// fault stopped the copy.
    /// </summary>
    public bool CopyFromKernelNoFault(ulong va, Span<byte> destination)
    {
        fixed (byte* p = destination)
            return Access(va, p, destination.Length, CopyOp.ToBuffer, 0, MemoryAccess.Read, user: false, fixup: true) == 0;
    }

    private static void ValidateKernelRange(ulong va, ulong size)
    {
        if (!VirtualAddress.IsPageAligned(va) || !VirtualAddress.IsPageAligned(size))
            throw new ArgumentException($"Kernel range 0x{va:x} + 0x{size:x} is not page aligned.", nameof(va));
        if (va < VirtualAddress.KernelStart || va + size < va)
            throw new ArgumentException($"0x{va:x} + 0x{size:x} is not a kernel-half range (from 0x{VirtualAddress.KernelStart:x}).", nameof(va));
    }

    /// <summary>A kernel access to vmalloc space with nothing mapped there (a guard page, or an area that is gone) is KASAN's vmalloc-out-of-bounds; the fault then oopses as before.</summary>
    private protected override void KasanFault(ulong va, long size, MemoryAccess access, PageFaultErrorCode error)
    {
        if (va >= VirtualAddress.VmallocStart && va <= VirtualAddress.VmallocEnd && (error & PageFaultErrorCode.Protection) == 0)
            _kasan!.ReportAccess("vmalloc-out-of-bounds", (nuint)va, size, access == MemoryAccess.Write, KasanFunction(access));
    }

    private protected override FaultOutcome HandleFault(ulong va, PageFaultErrorCode error, bool fixup)
    {
        if (fixup) return FaultOutcome.Failed;
        throw Oops(this, va, error, 0, "swapper/0");
    }

    /// <summary>Builds and logs the oops of an unhandled kernel-mode fault in <paramref name="space"/>.</summary>
    internal KernelOopsException Oops(VirtualAddressSpace space, ulong va, PageFaultErrorCode error, int pid, string comm)
    {
        int n = Interlocked.Increment(ref _oopsCount);
        Interlocked.Increment(ref Statistics.Oops);
        string report = OopsReport.Build(space, va, error, n, pid, comm);
        lock (_log) _log.Add(report);
        return new KernelOopsException(va, error, report);
    }

    /// <summary>Frees the kernel page tables and the zero page.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            if (_oomKiller != null) _pages.ClearOomKiller(_oomKiller);
            _pages.ClearHighmemMapper(this);
            DisposeSwap();
            UnregisterDirectMap();
            FreeFixmap();
            // Processes nobody disposed lose their memory with the system: their calls throw from here on.
            AddressSpace[] orphans;
            lock (_processes) orphans = [.. _processes];
            foreach (var p in orphans) p.Orphan();
            for (int i = VirtualAddress.KernelPgdIndex; i < VirtualAddress.EntriesPerTable; i++)
            {
                ulong pgd = _pgd[i];
                if ((pgd & (ulong)PteFlags.Present) == 0) continue;
                FreeTableTree(TableOf(pgd), 1);
                _pgd[i] = 0;
            }
            if (_zeroPage != null)
            {
                _zeroPage->FlagsAndZone &= ~(ulong)(uint)PageFlags.Reserved;
                _pages.FreePages(_zeroPage, 0);
                _zeroPage = null;
            }
        }
        base.Dispose(disposing);
    }

    /// <summary>Frees a table and every table below it (level 1 = PUD, 2 = PMD, 3 = PTE table).</summary>
    private void FreeTableTree(ulong* table, int level)
    {
        if (level < 3)
        {
            for (int i = 0; i < VirtualAddress.EntriesPerTable; i++)
            {
                ulong e = table[i];
                if ((e & (ulong)PteFlags.Present) != 0 && (e & (ulong)PteFlags.Huge) == 0) FreeTableTree(TableOf(e), level + 1);
            }
        }
        FreeTablePage(TablePage(table));
    }
}
