using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

public sealed unsafe partial class AddressSpace : ITlbFlushTarget
{
    /// <summary>The anon_vma family this address space's anonymous pages belong to (shared with its forks).</summary>
    internal AnonVma AnonFamily { get; }

    /// <summary>Swap entries in this address space's page tables (MM_SWAPENTS).</summary>
    private long _swapEnts;

    /// <summary>
    /// mm->tlb_flush_batched: the TLB generation of the latest entry a reclaim batch cleared here without waiting for
    /// the shootdown yet (0: none). munmap, mprotect and mremap wait for it before they return.
    /// </summary>
    private long _tlbBatchPending;

    /// <summary>The TLB generation a reclaim batch still owes this address space a shootdown for; 0 when none (tests).</summary>
    internal long TlbBatchPending => Volatile.Read(ref _tlbBatchPending);

    /// <summary>
    /// The rmap walk's locks: the i_mmap lock (the area list cannot change) and the ptl, both with trylock. Reclaim
    /// runs inside allocations, and the thread allocating may hold either lock of this or another address space (page
    /// tables are allocated under the ptl), so it never waits for them and never re-enters its own. False when busy
    /// or the address space is gone.
    /// </summary>
    private bool TryEnterRmap()
    {
        if (_immapLock.IsHeldByCurrentThread || !_immapLock.TryEnter()) return false;
        if (_mappersGone || _ptl.IsHeldByCurrentThread || !_ptl.TryEnter())
        {
            _immapLock.Exit();
            return false;
        }
        return true;
    }

    private void ExitRmap()
    {
        _ptl.Exit();
        _immapLock.Exit();
    }

    /// <summary>True when an anonymous page of linear index <paramref name="index"/> may sit in <paramref name="v"/>: a private area covering it.</summary>
    private static bool CoversAnon(VmArea v, ulong index) => !v.IsShared && index >= v.PgOff && index < v.EndIndex;

    /// <summary>
    /// The PTE slot in <paramref name="v"/> that maps <paramref name="page"/> (linear index <paramref name="index"/>),
    /// or null. Under <see cref="TryEnterRmap"/>.
    /// </summary>
    private ulong* PteOf(VmArea v, PageFrame* page, ulong index, out ulong va)
    {
        va = v.Start + ((index - v.PgOff) << VirtualAddress.PageShift);
        ulong* ptep = FindPteSlot(va);
        if (ptep == null) return null;
        ulong pte = Volatile.Read(ref *ptep);
        if (!IsMapped(pte) || (pte & (ulong)PteFlags.Special) != 0 || PageTableEntry.PfnOf(pte) != page->Pfn) return null;
        return ptep;
    }

    /// <summary>
    /// page_referenced_one over this address space: clears the accessed bit of every entry that maps the anonymous
    /// <paramref name="page"/> and flushes it from the TLBs, so the next access sets it again. Returns how many were set.
    /// </summary>
    internal int AnonReferenced(PageFrame* page, ulong index) => ReferencedIn(null, null, page, index);

    /// <summary>page_referenced_one over this address space for a page of <paramref name="shmem"/> at <paramref name="index"/>.</summary>
    internal int ShmemReferenced(ShmemObject shmem, ulong index, PageFrame* page) => ReferencedIn(null, shmem, page, index);

    /// <summary>
    /// The walk behind <see cref="AnonReferenced"/> (<paramref name="file"/> and <paramref name="shmem"/> null),
    /// <see cref="ShmemReferenced"/> and <see cref="IFileMapper.ReferencedTry"/>: clears the accessed bit of each entry
    /// that maps <paramref name="page"/>; a busy address space counts as one.
    /// </summary>
    private int ReferencedIn(FileMapping? file, ShmemObject? shmem, PageFrame* page, ulong index)
    {
        int young = 0;
        if (!TryEnterRmap()) return 1; // busy: count it as in use rather than wait
        try
        {
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                if (!Covers(v, file, shmem, index)) continue;
                ulong* ptep = PteOf(v, page, index, out ulong va);
                if (ptep == null || !ClearYoung(ptep)) continue;
                young++;
                Flush(va, va + VirtualAddress.PageSize, waitForAccesses: false);
            }
        }
        finally { ExitRmap(); }
        return young;
    }

    /// <summary>ptep_test_and_clear_young.</summary>
    private static bool ClearYoung(ulong* ptep)
    {
        while (true)
        {
            ulong old = Volatile.Read(ref *ptep);
            if ((old & (ulong)PteFlags.Accessed) == 0) return false;
            if (Interlocked.CompareExchange(ref *ptep, old & ~(ulong)PteFlags.Accessed, old) == old) return true;
        }
    }

    /// <summary>
    /// try_to_unmap_one over this address space for an anonymous page in the swap cache: every entry that maps it
    /// becomes the swap entry (one swap_map count each), its mapping's reference and mapcount go, and the TLBs are
    /// flushed before the page is touched again. Returns whether one of the entries was dirty.
    /// </summary>
    internal bool AnonUnmapToSwap(PageFrame* page, ulong index, SwapDevice device, SwapEntry entry)
    {
        bool dirty = false;
        ulong swapPte = entry.ToPte();
        if (!TryEnterRmap()) return false; // busy: the page stays mapped and reclaim moves on
        try
        {
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                if (!CoversAnon(v, index)) continue;
                ulong* ptep = PteOf(v, page, index, out ulong va);
                if (ptep == null) continue;
                device.Duplicate(entry); // first: an overflow leaves the entry as it was
                ulong old = Interlocked.Exchange(ref *ptep, swapPte);
                FlushUnmapped(va, old);
                dirty |= (old & (ulong)PteFlags.Dirty) != 0;
                Interlocked.Decrement(ref page->_mapcount);
                AddRss(anon: true, -1);
                Interlocked.Increment(ref _swapEnts);
                _pages.PutPage(page);
            }
        }
        finally { ExitRmap(); }
        return dirty;
    }

    /// <summary>
    /// The shootdown after try_to_unmap cleared the entry for <paramref name="va"/> (it was <paramref name="old"/>): no
    /// thread may go on using the page through a translation it holds. Inside the calling thread's reclaim batch the
    /// wait is the batch's (the page is neither freed nor written out before it); otherwise it is now.
    /// </summary>
    private void FlushUnmapped(ulong va, ulong old)
    {
        TlbUnmapBatch? batch = TlbUnmapBatch.Current;
        if (batch == null)
        {
            Flush(va, va + VirtualAddress.PageSize, waitForAccesses: true);
            return;
        }
        long gen = Flush(va, va + VirtualAddress.PageSize, waitForAccesses: false);
        if (!OtherTlbUsers()) return; // nobody else can be inside an access: nothing to wait for
        Volatile.Write(ref _tlbBatchPending, gen); // under the ptl: generations only grow here
        batch.Add(this, gen, dirty: (old & (ulong)PteFlags.Dirty) != 0);
    }

    /// <inheritdoc/>
    void ITlbFlushTarget.WaitForTlbGeneration(long generation)
    {
        WaitForGeneration(generation, barrierDone: true);
        BatchedFlushDone(generation);
    }

    /// <inheritdoc/>
    private protected override void BatchedFlushDone(long gen)
    {
        long pending = Volatile.Read(ref _tlbBatchPending);
        if (pending != 0 && pending <= gen) Interlocked.CompareExchange(ref _tlbBatchPending, 0, pending);
    }

    /// <summary>
    /// flush_tlb_batched_pending: munmap, mprotect and mremap may find entries a reclaim batch cleared (and so flush
    /// nothing for them); before they return, no thread may still be inside an access through those translations.
    /// </summary>
    private void FlushBatchedPending()
    {
        long pending = Volatile.Read(ref _tlbBatchPending);
        if (pending == 0) return;
        WaitForGeneration(pending, barrierDone: false);
        BatchedFlushDone(pending);
    }

    /// <summary>True when page <paramref name="index"/> of <paramref name="mapping"/> may be mapped in <paramref name="v"/>.</summary>
    private static bool CoversFile(VmArea v, FileMapping mapping, ulong index)
        => ReferenceEquals(v.File, mapping) && index >= v.PgOff && index < v.EndIndex;

    /// <inheritdoc/>
    int IFileMapper.ReferencedTry(FileMapping mapping, ulong index, PageFrame* page) => ReferencedIn(mapping, null, page, index);

    /// <summary>True when page <paramref name="index"/> of <paramref name="shmem"/> may be mapped in <paramref name="v"/>.</summary>
    private static bool CoversShmem(VmArea v, ShmemObject shmem, ulong index)
        => ReferenceEquals(v.Shared, shmem) && index >= v.PgOff && index < v.EndIndex;

    /// <summary>The rmap walks' area test: of <paramref name="file"/>, else of <paramref name="shmem"/>, else anonymous.</summary>
    private static bool Covers(VmArea v, FileMapping? file, ShmemObject? shmem, ulong index)
        => file != null ? CoversFile(v, file, index) : shmem != null ? CoversShmem(v, shmem, index) : CoversAnon(v, index);

    /// <summary>
    /// try_to_unmap_one over this address space for a page of <paramref name="shmem"/>: every entry that maps it goes
    /// (the area faults the page back from the object), with trylocks; leaves the entries when the address space is busy.
    /// </summary>
    internal void ShmemTryUnmap(ShmemObject shmem, ulong index, PageFrame* page) => TryUnmapShared(null, shmem, index, page);

    /// <inheritdoc/>
    void IFileMapper.TryUnmap(FileMapping mapping, ulong index, PageFrame* page) => TryUnmapShared(mapping, null, index, page);

    /// <summary>
    /// try_to_unmap_one for a page of <paramref name="file"/> or of <paramref name="shmem"/> at <paramref name="index"/>:
    /// every entry of this address space that maps it goes, and a dirty one makes the page dirty. Faults bring the page
    /// back from the object, so no entry is left in its place.
    /// </summary>
    private void TryUnmapShared(FileMapping? file, ShmemObject? shmem, ulong index, PageFrame* page)
    {
        if (!TryEnterRmap()) return;
        try
        {
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                if (!Covers(v, file, shmem, index)) continue;
                ulong* ptep = PteOf(v, page, index, out ulong va);
                if (ptep == null) continue;
                ulong old = Interlocked.Exchange(ref *ptep, 0);
                TablePage(AlignToTable(ptep))->Data0--;
                FlushUnmapped(va, old);
                bool dirty = (old & (ulong)PteFlags.Dirty) != 0;
                Interlocked.Decrement(ref page->_mapcount);
                if (file != null)
                {
                    if (dirty) file.SetPageDirty(page);
                    AddRssFor(page, -1, file);
                }
                else
                {
                    if (dirty) PageFrame.SetFlags(page, PageFlags.Dirty);
                    AddRss(anon: false, -1);
                }
                _pages.PutPage(page);
            }
        }
        finally { ExitRmap(); }
    }
}
