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
/// because every process PGD may point at them. Mapping a page does not take a reference to it: the caller
/// (vmalloc) owns the pages. Dispose only after every <see cref="AddressSpace"/> created with it.
/// </remarks>
public sealed unsafe partial class KernelAddressSpace : VirtualAddressSpace
{
    private readonly List<string> _log = new();
    private PageFrame* _zeroPage;
    private int _nextPid = 1;
    private int _oopsCount;
    private int _liveProcesses;

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
    }

    /// <summary>Creates the kernel page tables over the page allocator of <paramref name="system"/>.</summary>
    public KernelAddressSpace(MemorySystem system) : this((system ?? throw new ArgumentNullException(nameof(system))).Pages)
    {
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

    internal int AllocatePid()
    {
        Interlocked.Increment(ref _liveProcesses);
        return Interlocked.Increment(ref _nextPid);
    }

    internal void ProcessExited() => Interlocked.Decrement(ref _liveProcesses);

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
    public void MapKernelPages(ulong va, ReadOnlySpan<nint> pages, PteFlags prot)
    {
        ThrowIfDisposed();
        ValidateKernelRange(va, (ulong)pages.Length * VirtualAddress.PageSize);
        if ((prot & PteFlags.Present) == 0 || (prot & PteFlags.User) != 0 || (prot & PteFlags.Huge) != 0)
            throw new ArgumentException($"MapKernelPage 0x{va:x}: protection {prot} must be present, supervisor-only and not huge.", nameof(prot));
        for (int i = 0; i < pages.Length; i++)
            if (pages[i] == 0) throw new ArgumentException($"MapKernelPage 0x{va + (ulong)i * 4096:x}: page {i} is null.", nameof(pages));
        lock (_ptl)
        {
            for (int i = 0; i < pages.Length; i++)
            {
                ulong* slot = FindPteSlot(va + (ulong)i * VirtualAddress.PageSize);
                if (slot != null && *slot != 0)
                    throw new InvalidOperationException($"vmap: kernel address 0x{va + (ulong)i * VirtualAddress.PageSize:x} is already mapped (PTE {*slot:x}).");
            }
            for (int i = 0; i < pages.Length; i++)
            {
                ulong a = va + (ulong)i * VirtualAddress.PageSize;
                ulong* slot = AllocKernelPteSlot(a);
                if (slot == null) throw new OutOfMemoryException($"vmap: no memory for a page table at 0x{a:x}.");
                var page = (PageFrame*)pages[i];
                Volatile.Write(ref *slot, PageTableEntry.Make(page->Pfn, prot).Value);
                TablePage(AlignToTable(slot))->Data0++;
            }
        }
    }

    private ulong* AllocKernelPteSlot(ulong va)
    {
        ulong* pud = AllocLowerTable(_pgd + VirtualAddress.PgdIndex(va), VirtualAddress.PudIndex(va), PteFlags.KernelPageTable);
        if (pud == null) return null;
        ulong* pmd = AllocLowerTable(pud, VirtualAddress.PmdIndex(va), PteFlags.KernelPageTable);
        if (pmd == null) return null;
        return AllocLowerTable(pmd, VirtualAddress.PteIndex(va), PteFlags.KernelPageTable);
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
    /// <returns>The number of pages that were mapped.</returns>
    public int UnmapKernelRangeNoFlush(ulong va, ulong size)
    {
        ThrowIfDisposed();
        ValidateKernelRange(va, size);
        int cleared = 0;
        lock (_ptl)
        {
            for (ulong a = va; a < va + size; a += VirtualAddress.PageSize)
            {
                ulong* slot = FindPteSlot(a);
                if (slot == null || *slot == 0) continue;
                Interlocked.Exchange(ref *slot, 0);
                TablePage(AlignToTable(slot))->Data0--;
                cleared++;
            }
        }
        return cleared;
    }

    /// <summary>The page mapped at kernel address <paramref name="va"/>, or null (vmalloc_to_page).</summary>
    public PageFrame* TranslateToPage(ulong va)
    {
        PageTableEntry e = GetPte(va);
        return e.Present ? _memory.PfnToPage(e.Pfn + (e.Huge ? (va >> 12) & 511 : 0)) : null;
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
        if (!VirtualAddress.IsPageAligned(va) || (size & 0xFFF) != 0)
            throw new ArgumentException($"Kernel range 0x{va:x} + 0x{size:x} is not page aligned.", nameof(va));
        if (va < VirtualAddress.KernelStart || va + size < va)
            throw new ArgumentException($"0x{va:x} + 0x{size:x} is not a kernel-half range (from 0x{VirtualAddress.KernelStart:x}).", nameof(va));
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
