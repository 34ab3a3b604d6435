using Allocators.Filemap;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

/// <summary>
/// File mappings: mmap of a <see cref="FileMapping"/>, the fault path through the page cache (filemap_fault,
/// do_cow_fault, do_shared_fault, page_mkwrite), msync, and the page cache's way back into the page tables
/// (<see cref="IFileMapper"/>: unmap_mapping_range for truncation, page_mkclean for writeback).
/// </summary>
/// <remarks>
/// A shared file mapping maps the cache's pages themselves; a clean one is mapped read-only (write notification),
/// so the first write faults, marks the page dirty under its page lock and only then makes the entry writable and
/// dirty. Writeback write-protects and cleans the entries again under the page lock before it clears PG_dirty, so a
/// page written through a mapping is always dirty when its data differs from the file. A private file mapping maps
/// the cache's pages read-only and copies one into an anonymous page at the first write; the cache page is never
/// written through it.
/// </remarks>
public sealed unsafe partial class AddressSpace : IFileMapper
{
    /// <summary>
    /// Maps <paramref name="length"/> bytes of <paramref name="file"/> from <paramref name="offset"/> (mmap of a file
    /// descriptor). <see cref="MapFlags.Shared"/>: writes go to the page cache and from there to the file, and every
    /// mapping of the file sees them. <see cref="MapFlags.Private"/>: the mapping sees the file until it writes a page,
    /// which then becomes a private copy. Pages are read in on first touch; an access to a page wholly past the end of
    /// the file raises <see cref="BusErrorException"/> (the mapping may be longer than the file, and the file may
    /// shrink under it).
    /// </summary>
    /// <param name="address">Hint, or the exact address with <see cref="MapFlags.Fixed"/>/<see cref="MapFlags.FixedNoReplace"/>; 0 for none.</param>
    /// <param name="length">Bytes; rounded up to whole pages.</param>
    /// <param name="protection">PROT_* bits.</param>
    /// <param name="flags">Exactly one of <see cref="MapFlags.Private"/>/<see cref="MapFlags.Shared"/>; optionally
    /// <see cref="MapFlags.Fixed"/>, <see cref="MapFlags.FixedNoReplace"/>, <see cref="MapFlags.Populate"/>.</param>
    /// <param name="file">The open file, from this address space's memory system's page cache.</param>
    /// <param name="offset">Byte offset in the file of the mapping's first byte; a multiple of the page size.</param>
    /// <returns>The start of the new mapping.</returns>
    /// <exception cref="ArgumentException">Bad length, flags or offset, or a file of another memory system (EINVAL).</exception>
    /// <exception cref="UnauthorizedAccessException">A shared writable mapping of a file opened read-only (EACCES).</exception>
    /// <exception cref="InvalidOperationException"><see cref="MapFlags.FixedNoReplace"/> and the range is in use (EEXIST).</exception>
    /// <exception cref="OutOfMemoryException">No free range of that size, or, with <see cref="MapFlags.Populate"/>, no memory.</exception>
    public ulong Mmap(ulong address, ulong length, MemoryProtection protection, MapFlags flags, FileMapping file, long offset)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(file);
        ObjectDisposedException.ThrowIf(file.IsDisposed, file);
        ulong len = CheckMmapLength(address, length, flags, out bool shared);
        if ((flags & (MapFlags.Anonymous | MapFlags.GrowsDown | MapFlags.HugePage)) != 0)
            throw new ArgumentException($"mmap of {file.Path}: {flags & (MapFlags.Anonymous | MapFlags.GrowsDown | MapFlags.HugePage)} does not apply to a file mapping (EINVAL).", nameof(flags));
        CheckMmapProtection(address, protection);
        if (offset < 0 || (offset & (VirtualAddress.PageSize - 1)) != 0)
            throw new ArgumentException($"mmap of {file.Path}: offset {offset} is not a non-negative multiple of the page size (EINVAL).", nameof(offset));
        if (!ReferenceEquals(file.Cache.Pages, _pages))
            throw new ArgumentException($"mmap of {file.Path}: the file belongs to another memory system's page cache.", nameof(file));
        if (shared && (protection & MemoryProtection.Write) != 0 && !file.CanWrite)
            throw new UnauthorizedAccessException($"mmap of {file.Path}: a shared writable mapping needs a file opened for writing (EACCES).");
        bool fixedAddress = (flags & (MapFlags.Fixed | MapFlags.FixedNoReplace)) != 0;
        if (fixedAddress) ValidateUserRange(address, len, "mmap");
        ulong pgoff = (ulong)offset >> VirtualAddress.PageShift;
        VmFlags vmFlags = ToVmFlags(protection) | (shared ? VmFlags.Shared : 0);

        if ((flags & MapFlags.Populate) != 0) return MmapPopulate(address, len, VirtualAddress.PageSize, flags, vmFlags, file, pgoff);
        EnterMmapWrite();
        try
        {
            VmArea vma = MapRegion(address, len, VirtualAddress.PageSize, flags, vmFlags, file, pgoff);
            ulong start = vma.Start;
            MergeVma(vma);
            return start;
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// msync: with <see cref="MsyncFlags.Sync"/>, writes the dirty pages of the shared file mappings in
    /// [<paramref name="address"/>, +<paramref name="length"/>) back to their files and waits (the data is in the file
    /// when it returns). <see cref="MsyncFlags.Async"/> only makes sure the pages are marked dirty, the flusher writes
    /// them later; <see cref="MsyncFlags.Invalidate"/> has nothing to do (the mappings are the page cache).
    /// Anonymous and private mappings in the range are skipped.
    /// </summary>
    /// <exception cref="ArgumentException">Unaligned address, unknown flags, or both MS_SYNC and MS_ASYNC (EINVAL).</exception>
    /// <exception cref="InvalidOperationException">Part of the range is not mapped (ENOMEM); the mapped parts are still synced.</exception>
    /// <exception cref="IOException">Writing a file back failed (EIO); its pages stay dirty.</exception>
    public void Msync(ulong address, ulong length, MsyncFlags flags)
    {
        ThrowIfDisposed();
        if ((flags & ~(MsyncFlags.Async | MsyncFlags.Invalidate | MsyncFlags.Sync)) != 0
            || (flags & (MsyncFlags.Async | MsyncFlags.Sync)) == (MsyncFlags.Async | MsyncFlags.Sync))
            throw new ArgumentException($"msync at 0x{address:x}: bad flags {flags} (EINVAL).", nameof(flags));
        ulong len = VirtualAddress.PageAlignUp(length);
        ValidateUserRange(address, len, "msync", allowLow: true);
        if (len == 0) return;
        ulong end = address + len;
        bool hole = false;
        _mmapLock.EnterReadLock();
        try
        {
            ulong cursor = address;
            for (VmArea? v = _vmas.FindVma(address); v != null && v.Start < end; v = v.Next)
            {
                if (v.Start > cursor) hole = true;
                cursor = v.End;
                if (v.File == null || !v.IsShared) continue;
                ulong s = Math.Max(v.Start, address), e = Math.Min(v.End, end);
                TransferDirtyBits(v, s, e);
                // The mmap_lock stays held for reading: the area and its file cannot go away meanwhile, and writeback
                // takes only page locks and the i_mmap lock, never the mmap_lock.
                if ((flags & MsyncFlags.Sync) != 0) v.File.SyncRange(v.PageIndex(s), v.PageIndex(e));
            }
            if (cursor < end) hole = true;
        }
        finally { _mmapLock.ExitReadLock(); }
        if (hole) throw new InvalidOperationException($"msync: part of [0x{address:x}, 0x{end:x}) is not mapped (ENOMEM).");
    }

    /// <summary>
    /// The PTE dirty bits of [start, end) of a shared file area into PG_dirty (what page_mkclean would collect). The
    /// fault path already dirtied every page whose entry it made writable; this keeps msync right on its own.
    /// </summary>
    private void TransferDirtyBits(VmArea vma, ulong start, ulong end)
    {
        FileMapping file = vma.File!;
        lock (_ptl)
        {
            WalkPmds(start, end, (pmdSlot, s, e) =>
            {
                ulong* table = TableOf(*pmdSlot);
                for (ulong va = s; va < e; va += VirtualAddress.PageSize)
                {
                    ulong pte = Volatile.Read(ref table[VirtualAddress.PteIndex(va)]);
                    if (!IsMapped(pte) || (pte & (ulong)PteFlags.Dirty) == 0) continue;
                    PageFrame* page = _memory.PfnToPage(PageTableEntry.PfnOf(pte));
                    if (IsFilePage(page)) file.SetPageDirty(page);
                }
            }, null);
        }
    }

    /// <summary>What the fault on a file area came to.</summary>
    private enum FileFault
    {
        /// <summary>Resolved from the page cache (or nothing to do).</summary>
        Minor,
        /// <summary>Resolved after reading the file (VM_FAULT_MAJOR).</summary>
        Major,
        /// <summary>The page lies past the end of the file (VM_FAULT_SIGBUS).</summary>
        BusError,
    }

    /// <summary>
    /// The fault on a file area, under the mmap_lock for reading: a write to a present read-only entry is a
    /// copy-on-write (private) or page_mkwrite (shared); an empty entry is filled by filemap_fault. The page is
    /// found or read with no lock held but the mmap_lock (the read may sleep on I/O), locked, checked against
    /// truncation (still in the cache, still inside the file), then mapped under the ptl if the entry is still empty.
    /// A swap entry (a private copy swapped out) is returned in <paramref name="swapPte"/> for do_swap_page.
    /// </summary>
    private FileFault HandleFileFault(VmArea vma, ulong va, PageFaultErrorCode error, out IOException? readError, out ulong swapPte)
    {
        readError = null;
        swapPte = 0;
        FileMapping file = vma.File!;
        bool write = (error & PageFaultErrorCode.Write) != 0;
        ulong index = vma.PageIndex(va);
        while (true)
        {
            PageFrame* mapped = null;
            lock (_ptl)
            {
                ulong* ptep = AllocPteSlot(va, PteFlags.PageTable);
                if (ptep == null) throw NeedPageException.Table;
                ulong pte = Volatile.Read(ref *ptep);
                if (SwapEntry.IsSwapPte(pte))
                {
                    swapPte = pte; // a private copy swapped out: the caller runs do_swap_page
                    return FileFault.Minor;
                }
                if (pte != 0)
                {
                    // Spurious unless a write hit a present read-only entry: the retried walk sets Accessed/Dirty.
                    if (!write || (pte & (ulong)PteFlags.Present) == 0 || (pte & (ulong)PteFlags.ReadWrite) != 0) return FileFault.Minor;
                    PageFrame* page = _memory.PfnToPage(PageTableEntry.PfnOf(pte));
                    if (!IsFilePage(page))
                    {
                        DoWpPage(vma, va, ptep, pte); // an anonymous copy of a private area, shared with a fork
                        return FileFault.Minor;
                    }
                    if (!vma.IsShared)
                    {
                        WpFileCopy(vma, va, ptep, page, file);
                        return FileFault.Minor;
                    }
                    _pages.GetPage(page); // kept across the sleep on the page lock
                    mapped = page;
                }
            }
            if (mapped != null)
            {
                DoPageMkwrite(va, index, mapped, file);
                file.Cache.BalanceDirtyPages(file);
                return FileFault.Minor;
            }

            if (index >= PagesIn(file.Length)) return FileFault.BusError;
            PageFrame* cached;
            bool major;
            try
            {
                cached = file.GetUptodatePage(index, out major);
            }
            catch (IOException e)
            {
                // filemap_fault: a page that cannot be read is VM_FAULT_SIGBUS.
                readError = e;
                return FileFault.BusError;
            }
            PageWait.Lock(cached);
            if (!file.Owns(cached, index))
            {
                // Truncated or dropped while we slept: look again (the page index may now be past the end).
                PageWait.Unlock(cached);
                file.PutPage(cached);
                continue;
            }
            if (index >= PagesIn(file.Length))
            {
                PageWait.Unlock(cached);
                file.PutPage(cached);
                return FileFault.BusError;
            }
            bool kept = false;
            try
            {
                lock (_ptl)
                {
                    ulong* ptep = AllocPteSlot(va, PteFlags.PageTable);
                    if (ptep == null) throw NeedPageException.Table;
                    // Another thread mapped it meanwhile: its entry stands, the access is retried.
                    if (Volatile.Read(ref *ptep) == 0) kept = MapFilePage(vma, va, ptep, cached, file, write);
                }
            }
            finally
            {
                PageWait.Unlock(cached);
                if (!kept) file.PutPage(cached);
            }
            if (major) Interlocked.Increment(ref file.Cache.Stats.PgMajFault);
            // fault_dirty_shared_page: a writer through a mapping is throttled like one through write().
            if (write && vma.IsShared) file.Cache.BalanceDirtyPages(file);
            return major ? FileFault.Major : FileFault.Minor;
        }
    }

    /// <summary>Pages that hold file data for a file of <paramref name="length"/> bytes (the first page index a fault may not map).</summary>
    private static ulong PagesIn(long length) => ((ulong)length + VirtualAddress.PageSize - 1) >> VirtualAddress.PageShift;

    /// <summary>
    /// finish_fault on an empty entry, under the page lock and the ptl. A private write copies the page into a new
    /// anonymous page (do_cow_fault) and returns false: the cache page's reference is the caller's to drop. Otherwise
    /// the cache page itself is mapped — writable and dirty after set_page_dirty for a shared write, read-only for a
    /// read (a shared area's first write then faults into page_mkwrite) — and keeps the caller's reference: true.
    /// </summary>
    private bool MapFilePage(VmArea vma, ulong va, ulong* ptep, PageFrame* page, FileMapping file, bool write)
    {
        PteFlags prot = VmPageProt(vma.Flags);
        PageFrame* tablePage = TablePage(AlignToTable(ptep));
        if (write && !vma.IsShared)
        {
            PageFrame* copy = AllocAnonPage(vma, va, zero: false);
            Buffer.MemoryCopy(_pages.AddressOf(page), _pages.AddressOf(copy), VirtualAddress.PageSize, VirtualAddress.PageSize);
            Volatile.Write(ref *ptep, PageTableEntry.Make(copy->Pfn, prot | PteFlags.ReadWrite | PteFlags.Dirty).Value);
            tablePage->Data0++;
            AddRss(anon: true, 1);
            return false;
        }
        if (write)
        {
            file.SetPageDirty(page);
            prot |= PteFlags.ReadWrite | PteFlags.Dirty;
        }
        else
        {
            prot &= ~PteFlags.ReadWrite;
        }
        Interlocked.Increment(ref page->_mapcount);
        Volatile.Write(ref *ptep, PageTableEntry.Make(page->Pfn, prot).Value);
        tablePage->Data0++;
        AddRssFor(page, 1, file);
        return true;
    }

    /// <summary>
    /// wp_page_copy for a page-cache page mapped by a private area: the write goes to a new anonymous copy, the cache
    /// page (and so the file) is untouched. Under the ptl.
    /// </summary>
    private void WpFileCopy(VmArea vma, ulong va, ulong* ptep, PageFrame* old, FileMapping file)
    {
        PteFlags prot = VmPageProt(vma.Flags) | PteFlags.ReadWrite | PteFlags.Dirty | PteFlags.Accessed;
        PageFrame* copy = AllocAnonPage(vma, va, zero: false);
        Buffer.MemoryCopy(_pages.AddressOf(old), _pages.AddressOf(copy), VirtualAddress.PageSize, VirtualAddress.PageSize);
        ReplacePte(ptep, PageTableEntry.Make(copy->Pfn, prot).Value, VirtualAddress.PageAlignDown(va));
        Interlocked.Decrement(ref old->_mapcount);
        AddRssFor(old, -1, file);
        AddRss(anon: true, 1);
        _pages.PutPage(old);
        Interlocked.Increment(ref _cowFaults);
        Interlocked.Increment(ref _stats.CowFault);
    }

    /// <summary>
    /// do_page_mkwrite + wp_page_shared: the first write to a clean page of a shared file area. Under the page lock
    /// (so writeback, which cleans entries and PG_dirty under it, cannot interleave) the page is marked dirty and the
    /// entry made writable and dirty, if it still maps this page. Drops the reference the caller took.
    /// </summary>
    private void DoPageMkwrite(ulong va, ulong index, PageFrame* page, FileMapping file)
    {
        try
        {
            PageWait.Lock(page);
            try
            {
                // Truncated: its entries are being zapped; the retried access faults again and finds the truth.
                if (!file.Owns(page, index)) return;
                lock (_ptl)
                {
                    ulong* ptep = FindPteSlot(va);
                    if (ptep == null) return;
                    ulong pte = Volatile.Read(ref *ptep);
                    if ((pte & (ulong)PteFlags.Present) == 0 || PageTableEntry.PfnOf(pte) != page->Pfn) return;
                    if ((pte & (ulong)PteFlags.ReadWrite) != 0) return;
                    file.SetPageDirty(page);
                    // Upgrading permissions needs no flush; the walker may set Accessed meanwhile, hence the atomic OR.
                    Interlocked.Or(ref *ptep, (ulong)(PteFlags.ReadWrite | PteFlags.Dirty | PteFlags.Accessed));
                }
            }
            finally { PageWait.Unlock(page); }
        }
        finally { file.PutPage(page); }
    }

    /// <summary>
    /// do_sigbus: BUS_ADRERR for a user access (past the end of the file, or <paramref name="readError"/> reading it),
    /// the fix-up for a uaccess routine, an oops for any other kernel access.
    /// </summary>
    private FaultOutcome BusError(VmArea vma, ulong va, PageFaultErrorCode error, bool fixup, IOException? readError)
    {
        if (fixup) return FaultOutcome.Failed;
        if ((error & PageFaultErrorCode.User) == 0) throw _kernel.Oops(this, va, error, Pid, Name);
        Interlocked.Increment(ref _stats.Sigbus);
        throw BusErrorException.Create(va, error, Name, Pid, vma.File!.Path, vma.PageIndex(va), readError);
    }

    /// <inheritdoc/>
    void IFileMapper.UnmapMappingRange(FileMapping mapping, ulong firstIndex)
    {
        var gather = new TlbGather();
        lock (_immapLock)
        {
            if (_mappersGone) return;
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                if (!ReferenceEquals(v.File, mapping) || v.EndIndex <= firstIndex) continue;
                ulong start = firstIndex <= v.PgOff ? v.Start : v.Start + ((firstIndex - v.PgOff) << VirtualAddress.PageShift);
                // Faults run beside this (they hold the mmap_lock, not the i_mmap lock): the tables stay.
                ZapRange(start, v.End, gather, mapping, freeTables: false);
            }
            FinishGather(gather);
        }
    }

    /// <inheritdoc/>
    bool IFileMapper.MkClean(FileMapping mapping, ulong index, PageFrame* page)
    {
        const ulong WriteBits = (ulong)(PteFlags.ReadWrite | PteFlags.Dirty);
        bool dirty = false;
        lock (_immapLock)
        {
            if (_mappersGone) return false;
            // Private areas map cache pages read-only and clean; only shared ones can hold a writable or dirty entry.
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                if (!ReferenceEquals(v.File, mapping) || !v.IsShared || index < v.PgOff || index >= v.EndIndex) continue;
                ulong va = v.Start + ((index - v.PgOff) << VirtualAddress.PageShift);
                lock (_ptl)
                {
                    ulong* slot = FindPteSlot(va);
                    if (slot == null) continue;
                    while (true)
                    {
                        ulong old = Volatile.Read(ref *slot);
                        // PROTNONE entries count too: mprotect back to writable keeps a dirty entry writable.
                        if (!IsMapped(old) || PageTableEntry.PfnOf(old) != page->Pfn || (old & WriteBits) == 0) break;
                        if (Interlocked.CompareExchange(ref *slot, old & ~WriteBits, old) != old) continue;
                        dirty |= (old & (ulong)PteFlags.Dirty) != 0;
                        // Writes already under way through the old translation land before the caller copies the page.
                        Flush(va, va + VirtualAddress.PageSize, waitForAccesses: true);
                        break;
                    }
                }
            }
        }
        return dirty;
    }
}
