using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Mmu;

/// <summary>
/// A process address space (mm_struct): areas (VMAs) in an ordered tree, four-level page tables, a software TLB per
/// thread, and the fault handler that fills it all in on demand — demand-zero pages, the shared zero page,
/// copy-on-write after <see cref="Fork"/>, a stack that grows down, transparent huge pages, and pages of files in the
/// page cache (file mappings, <c>AddressSpace.Filemap.cs</c>).
/// </summary>
/// <remarks>
/// <para>Thread-safe. Reads and writes (<see cref="VirtualAddressSpace.Read{T}"/> ...) take no lock on a TLB hit.
/// The fault handler holds the mmap_lock for reading (several threads fault at once) and the page-table lock while it
/// changes an entry; <c>Mmap</c>, <see cref="Munmap"/>, <see cref="Mprotect"/>, <see cref="Brk"/>,
/// <see cref="Mremap"/> and <see cref="Fork"/> hold the mmap_lock for writing (<c>Mmap</c> with
/// <see cref="MapFlags.Populate"/> holds it upgradeable while it faults the pages in, so other threads' faults go on).
/// Accesses are user-mode accesses; <see cref="CopyToUser"/>/<see cref="CopyFromUser"/> and
/// <see cref="ReadKernel{T}"/> are kernel-mode.</para>
/// <para>Pages are counted like the kernel's: every mapping of a page holds one reference and one mapcount, a shared
/// anonymous object holds one more reference per page; so unmapping and disposal free exactly the pages nobody else
/// maps. Disposing (exit_mmap) is not thread-safe with accesses still running.</para>
/// <para>Locks: mmap_lock, then (file areas) the page lock and the i_mmap lock, then the page-table lock
/// (docs/locking.md). Invariants (<c>CheckConsistency</c> checks them; the model-based tests run it): areas are
/// disjoint and sorted, <c>list order = tree order</c>, <c>|list| = |tree|</c>; every non-empty user entry lies in an
/// area, <c>writable ⇒ VM_WRITE</c>, and for each table <c>Data0 = #non-empty entries</c>; in a file area a cache page
/// is the file's page at that index, mapped writable only in a shared area and only while dirty.</para>
/// </remarks>
public sealed unsafe partial class AddressSpace : VirtualAddressSpace
{
    /// <summary>Top of the stack area (STACK_TOP = TASK_SIZE, without randomisation).</summary>
    public const ulong StackTop = VirtualAddress.TaskSize;
    /// <summary>Size of the stack area created with the address space.</summary>
    public const ulong InitialStackSize = 128 * 1024;
    /// <summary>Largest the stack may grow (RLIMIT_STACK, 8 MiB).</summary>
    public const ulong StackLimit = 8UL << 20;
    /// <summary>Gap kept free below a stack so that it can grow and overruns hit nothing (stack_guard_gap, 256 pages).</summary>
    public const ulong StackGuardGap = 256UL * VirtualAddress.PageSize;
    /// <summary>Where top-down mmap placement starts (mmap_base: TASK_SIZE minus a 128 MiB stack gap, no randomisation).</summary>
    public const ulong MmapBase = VirtualAddress.TaskSize - (128UL << 20);
    /// <summary>Start of the heap (start_brk).</summary>
    public const ulong DefaultBrkBase = 0x0000_0000_0200_0000UL;

    private readonly KernelAddressSpace _kernel;
    private readonly MmuStatistics _stats;
    private readonly ReaderWriterLockSlim _mmapLock = new(LockRecursionPolicy.NoRecursion);
    private readonly VmaTree _vmas = new();
    private ulong _startBrk = DefaultBrkBase;
    private ulong _brk = DefaultBrkBase;
    private long _minFlt;
    private long _majFlt;
    private long _cowFaults;
    private long _cowReuses;
    private long _rssAnon;
    private long _rssFile;
    private long _rssShmem;

    // The i_mmap side of the areas: the page cache walks this address space's file areas (writeback's page_mkclean,
    // truncation's unmap_mapping_range) with a page locked, so it cannot take the mmap_lock, which a fault holds while
    // it waits for a page lock. Every change of the area list or of an area's bounds happens under the mmap_lock for
    // writing and this lock; the page cache's walks hold this lock only. Order: page lock, then this, then the ptl.
    private readonly Lock _immapLock = new();
    private bool _mappersGone;

    /// <summary>Creates an empty process address space with a stack area, sharing the kernel half of <paramref name="kernel"/>.</summary>
    /// <param name="kernel">The kernel whose page tables, zero page and counters this process uses.</param>
    /// <param name="name">The process name (comm), used in reports.</param>
    public AddressSpace(KernelAddressSpace kernel, string name = "process")
        : this(kernel, name, parentPid: 0, createStack: true, family: null)
    {
    }

    private AddressSpace(KernelAddressSpace kernel, string name, int parentPid, bool createStack, AnonVma? family)
        : base(LiveKernel(kernel).Pages, userMode: true, 0, VirtualAddress.TaskSize)
    {
        _kernel = kernel;
        _stats = kernel.Statistics;
        Name = name ?? "process";
        ParentPid = parentPid;
        // pgd_alloc: the kernel half is the kernel's (clone_pgd_range of the reference entries).
        for (int i = VirtualAddress.KernelPgdIndex; i < VirtualAddress.EntriesPerTable; i++) _pgd[i] = kernel.ReferencePgdEntry(i);
        Pid = kernel.AllocatePid(this);
        AnonFamily = kernel.JoinAnonVma(this, family);
        if (createStack)
        {
            var stack = new VmArea(StackTop - InitialStackSize, StackTop, VmFlags.Read | VmFlags.Write | VmFlags.GrowsDown)
            {
                Name = "[stack]",
                PgOff = (StackTop - InitialStackSize) >> VirtualAddress.PageShift,
            };
            _vmas.Insert(stack);
        }
    }

    private static KernelAddressSpace LiveKernel(KernelAddressSpace kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ObjectDisposedException.ThrowIf(kernel.IsDisposed, kernel);
        return kernel;
    }

    /// <summary>The kernel this process runs on.</summary>
    public KernelAddressSpace Kernel => _kernel;

    /// <summary>Process id, unique per kernel.</summary>
    public int Pid { get; }

    /// <summary>Parent's process id (0 when not forked).</summary>
    public int ParentPid { get; }

    /// <summary>Process name (comm).</summary>
    public string Name { get; }

    /// <summary>Start of the heap (start_brk).</summary>
    public ulong StartBrk => _startBrk;

    /// <summary>Current program break (brk).</summary>
    public ulong CurrentBrk => Volatile.Read(ref _brk);

    /// <summary>Number of areas (map_count).</summary>
    public int VmaCount
    {
        get
        {
            _mmapLock.EnterReadLock();
            try { return _vmas.Count; }
            finally { _mmapLock.ExitReadLock(); }
        }
    }

    /// <summary>
    /// Checks the address space's invariants (tests run it): the area tree is ordered, balanced, its heights and count
    /// right, and the address list agrees with it (each area starts at or after the previous one's end); the user
    /// half's page tables agree with the areas and with their own entry counts (see <see cref="CheckTable"/>).
    /// </summary>
    internal void CheckConsistency()
    {
        _mmapLock.EnterReadLock();
        try
        {
            _vmas.Check();
            int listed = 0;
            for (VmArea? v = _vmas.First, prev = null; v != null; prev = v, v = v.Next, listed++)
            {
                if (v.Start >= v.End || (prev != null && prev.End > v.Start) || !ReferenceEquals(v.Prev, prev))
                    throw new InvalidOperationException($"VMA list: {v} after {prev?.ToString() ?? "nothing"}.");
                if (!ReferenceEquals(_vmas.Find(v.Start), v)) throw new InvalidOperationException($"VMA {v} is listed but the tree finds {_vmas.Find(v.Start)}.");
            }
            if (listed != _vmas.Count) throw new InvalidOperationException($"{listed} VMAs listed, {_vmas.Count} in the tree.");
            lock (_ptl)
            {
                for (int i = 0; i < VirtualAddress.KernelPgdIndex; i++)
                {
                    ulong e = Volatile.Read(ref _pgd[i]);
                    if (e != 0) CheckTable(e, VirtualAddress.PudLevel, (ulong)i << VirtualAddress.LevelShift(VirtualAddress.PgdLevel));
                }
            }
        }
        finally { _mmapLock.ExitReadLock(); }
    }

    /// <summary>
    /// The page-table half of <see cref="CheckConsistency"/> for the table an upper entry points at: its entry count
    /// (the table page's Data0) equals its non-empty entries, and every leaf, present or not (a swap entry), lies in a
    /// VMA that allows what it maps (writable only in a VM_WRITE area, a huge leaf not past the area's end).
    /// </summary>
    private void CheckTable(ulong upper, int level, ulong baseVa)
    {
        ulong* table = TableOf(upper);
        if (table == null) throw new InvalidOperationException($"page table at 0x{baseVa:x} level {level}: entry {upper:x} points outside memory.");
        int used = 0;
        for (int i = 0; i < VirtualAddress.EntriesPerTable; i++)
        {
            ulong e = Volatile.Read(ref table[i]);
            if (e == 0) continue;
            used++;
            ulong va = baseVa | ((ulong)i << VirtualAddress.LevelShift(level));
            if (PointsToTable(e, level))
            {
                CheckTable(e, level + 1, va);
                continue;
            }
            var pte = new PageTableEntry(e);
            // Above the PTE level only a huge leaf may be non-present (a PROT_NONE huge page keeps PSE, as pmd_mkinvalid does).
            if (!pte.Present && level < VirtualAddress.PteLevel && !pte.Huge)
                throw new InvalidOperationException($"page table: a non-present upper entry {e:x} maps 0x{va:x} (level {level}).");
            VmArea? vma = _vmas.Find(va);
            if (vma == null) throw new InvalidOperationException($"page table: entry {e:x} maps 0x{va:x}, which no VMA covers.");
            if (pte.Present && pte.Writable && (vma.Flags & VmFlags.Write) == 0)
                throw new InvalidOperationException($"page table: 0x{va:x} is writable in a VMA without VM_WRITE ({vma}).");
            if (va + (1UL << VirtualAddress.LevelShift(level)) > vma.End)
                throw new InvalidOperationException($"page table: the level-{level} leaf at 0x{va:x} runs past its VMA {vma}.");
            if (vma.File != null && IsMapped(e)) CheckFileEntry(vma, va, pte);
        }
        ulong counted = TablePage(table)->Data0;
        if (counted != (ulong)used) throw new InvalidOperationException($"page table at 0x{baseVa:x} level {level}: {used} entries in use, count {counted}.");
    }

    /// <summary>
    /// The file-area half of <see cref="CheckTable"/>, true once no truncation is running: a page-cache page is the
    /// file's page at the entry's index; a private area maps it read-only; a shared area maps no anonymous page, and
    /// maps a cache page writable only while it is PG_dirty (else a write would go unseen by writeback).
    /// </summary>
    private void CheckFileEntry(VmArea vma, ulong va, PageTableEntry pte)
    {
        PageFrame* page = _memory.PfnToPage(pte.Pfn);
        if (!IsFilePage(page))
        {
            if (vma.IsShared) throw new InvalidOperationException($"page table: 0x{va:x} of the shared file area {vma} maps a non-file page {page->ToString()}.");
            return;
        }
        ulong index = vma.PageIndex(va);
        if (page->Private != (nuint)vma.File!.Id || page->Data0 != index)
            throw new InvalidOperationException($"page table: 0x{va:x} should map page {index} of {vma.File.Path} (id {vma.File.Id}) but maps mapping {page->Private} index {page->Data0}.");
        if (pte.Writable && !vma.IsShared)
            throw new InvalidOperationException($"page table: 0x{va:x} maps page {index} of {vma.File.Path} writable in a private area.");
        if (pte.Writable && !page->Has(PageFlags.Dirty))
            throw new InvalidOperationException($"page table: 0x{va:x} maps clean page {index} of {vma.File.Path} writable: a write would not dirty it.");
    }

    /// <summary>A snapshot of the areas in address order.</summary>
    public IReadOnlyList<VmaInfo> Vmas
    {
        get
        {
            ThrowIfDisposed();
            _mmapLock.EnterReadLock();
            try
            {
                var list = new List<VmaInfo>(_vmas.Count);
                for (VmArea? v = _vmas.First; v != null; v = v.Next) list.Add(v.ToInfo());
                return list;
            }
            finally { _mmapLock.ExitReadLock(); }
        }
    }

    /// <summary>The area containing <paramref name="va"/>, if any.</summary>
    public VmaInfo? FindVma(ulong va)
    {
        ThrowIfDisposed();
        _mmapLock.EnterReadLock();
        try { return _vmas.Find(va)?.ToInfo(); }
        finally { _mmapLock.ExitReadLock(); }
    }

    /// <summary>
    /// The page frame mapped at <paramref name="va"/> (follow_page), the zero page included, or null when nothing is
    /// mapped. Does not fault and takes no reference.
    /// </summary>
    public PageFrame* FollowPage(ulong va)
    {
        ThrowIfDisposed();
        lock (_ptl)
        {
            PageTableEntry e = GetPte(va);
            if (!IsMapped(e.Value)) return null;
            ulong pfn = e.Pfn + (e.Huge ? (ulong)VirtualAddress.PteIndex(va) : 0);
            return _memory.PfnToPage(pfn);
        }
    }

    /// <summary>
    /// Clears the Accessed bit of the entry that maps <paramref name="va"/> and flushes its TLB entry
    /// (ptep_clear_flush_young). Returns whether it was set.
    /// </summary>
    public bool TestAndClearYoung(ulong va)
    {
        ThrowIfDisposed();
        lock (_ptl)
        {
            ulong* slot = LeafSlot(va);
            if (slot == null) return false;
            ulong old;
            do
            {
                old = Volatile.Read(ref *slot);
                if ((old & (ulong)PteFlags.Accessed) == 0) return false;
            }
            while (Interlocked.CompareExchange(ref *slot, old & ~(ulong)PteFlags.Accessed, old) != old);
            Flush(VirtualAddress.PageAlignDown(va), VirtualAddress.PageAlignDown(va) + VirtualAddress.PageSize, waitForAccesses: false);
            return true;
        }
    }

    /// <summary>
    /// Writes a raw entry for <paramref name="va"/> with no TLB flush and no page accounting: for tests that show a
    /// missing flush is observable. The caller restores the original entry.
    /// </summary>
    internal void PokePteWithoutFlush(ulong va, PageTableEntry value)
    {
        lock (_ptl)
        {
            ulong* slot = FindPteSlot(va);
            if (slot == null) throw new InvalidOperationException($"No PTE table for 0x{va:x}.");
            Volatile.Write(ref *slot, value.Value);
        }
    }

    /// <summary>The leaf slot (PTE, or huge PMD) that maps <paramref name="va"/>, or null.</summary>
    private ulong* LeafSlot(ulong va)
    {
        ulong* pmd = FindPmdSlot(va);
        if (pmd == null) return null;
        ulong e = Volatile.Read(ref *pmd);
        if ((e & (ulong)PteFlags.Huge) != 0 && IsMapped(e)) return pmd;
        if ((e & (ulong)PteFlags.Present) == 0) return null;
        return TableOf(e) + VirtualAddress.PteIndex(va);
    }

    /// <summary>
    /// True for an entry that maps a page: present, or PROTNONE (present to the kernel but not to the walker:
    /// Global set with Present clear, as mprotect(PROT_NONE) leaves it).
    /// </summary>
    private static bool IsMapped(ulong e) => (e & ((ulong)PteFlags.Present | (ulong)PteFlags.Global)) != 0;

    /// <summary>mmap_write_lock, plus the i_mmap lock that keeps the page cache's walks off areas being changed.</summary>
    private void EnterMmapWrite()
    {
        _mmapLock.EnterWriteLock();
        _immapLock.Enter();
    }

    private void ExitMmapWrite()
    {
        _immapLock.Exit();
        _mmapLock.ExitWriteLock();
    }

    /// <summary>Tears the process down (exit_mmap): every mapping, page table and TLB is released.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing && IsOrphaned)
        {
            // The pages and tables went with the memory system; the files only need to forget this mapper.
            lock (_immapLock)
            {
                _mappersGone = true;
                for (VmArea? v = _vmas.First; v != null; v = v.Next)
                {
                    v.File?.UnlinkMapper(this);
                    v.Shared?.Mappers.Unlink(this);
                }
                _vmas.Clear();
            }
        }
        else if (disposing)
        {
            EnterMmapWrite();
            try
            {
                var gather = new TlbGather();
                for (VmArea? v = _vmas.First; v != null; v = v.Next) ZapRange(v.Start, v.End, gather, v.File);
                FreeAllUserTables(gather);
                FinishGather(gather);
                for (VmArea? v = _vmas.First; v != null; v = v.Next) v.Release(this);
                _vmas.Clear();
                _mappersGone = true;
            }
            finally { ExitMmapWrite(); }
            _kernel.LeaveAnonVma(AnonFamily, this);
            _kernel.ProcessExited(this);
        }
        base.Dispose(disposing);
        if (disposing) _mmapLock.Dispose();
    }
}
