using Allocators.Filemap;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// Creates a child address space (fork / dup_mmap). Shared areas stay shared (the child faults the same pages in;
    /// its file areas join the files' i_mmap);
    /// every private page is mapped by both sides read-only with its refcount and mapcount raised, so the first write
    /// on either side copies it — or reuses it when the other side has let go. The zero page is shared as is.
    /// Huge mappings of private areas are split first (huge pages are never shared here).
    /// </summary>
    /// <param name="name">The child's name; the parent's when null.</param>
    /// <exception cref="OutOfMemoryException">No memory for the child's page tables; the child is torn down again, giving
    /// back everything it took. The parent keeps its private pages write-protected (as after a failed fork in Linux) and
    /// its huge pages split; the next write reuses the page.</exception>
    public AddressSpace Fork(string? name = null)
    {
        ThrowIfDisposed();
        EnterMmapWrite();
        try
        {
            var child = new AddressSpace(_kernel, name ?? Name, Pid, createStack: false, AnonFamily);
            try
            {
                child._startBrk = _startBrk;
                child._brk = _brk;
                // The child is in its files' i_mmap from its first file area on: their walks wait until it is built.
                lock (child._immapLock)
                {
                    for (VmArea? v = _vmas.First; v != null; v = v.Next)
                    {
                        child._vmas.Insert(v.CloneDescriptor(child));
                        if (v.IsShared) continue;
                        SplitHugeRange(v.Start, v.End);
                        AllocChildTables(child, v.Start, v.End);
                        CopyPageRange(child, v.Start, v.End, v.File);
                    }
                }
                // The parent's entries lost RW: no thread of the parent may keep writing through an old translation.
                Flush(0, ulong.MaxValue, waitForAccesses: true);
            }
            catch
            {
                child.Dispose();
                throw;
            }
            return child;
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// The child's page tables for every table of this side's in [start, end) that maps anything, allocated where direct
    /// reclaim may run: outside this side's ptl, and under the child's only while a table is installed (pte_alloc before
    /// copy_pte_range locks the source). Under both locks, reclaim could unmap no page of either side, and with other
    /// address spaces forking at the same time nothing in the arena would be reclaimable: a fork would fail with swap
    /// free. The parent's tables cannot change meanwhile: its mmap lock is held for writing, and reclaim only rewrites
    /// entries.
    /// </summary>
    /// <exception cref="OutOfMemoryException">No memory for a table even after reclaim.</exception>
    private void AllocChildTables(AddressSpace child, ulong start, ulong end)
    {
        var used = new List<ulong>();
        lock (_ptl) WalkPmds(start, end, (pmdSlot, s, e) => { if (TablePage(TableOf(*pmdSlot))->Data0 != 0) used.Add(s); }, null);
        bool outer = t_noReclaimTables;
        foreach (ulong va in used)
        {
            while (true)
            {
                ulong* slot;
                lock (child._ptl)
                {
                    t_noReclaimTables = true;
                    try { slot = child.AllocPteSlot(va, PteFlags.PageTable); }
                    finally { t_noReclaimTables = outer; }
                }
                if (slot != null) break;
                if (!child.StashSpareTable()) throw new OutOfMemoryException($"fork: no memory for the child's page tables at 0x{va:x}.");
            }
        }
        child.DropSpareTable();
    }

    /// <summary>
    /// copy_page_range for a private area: share every mapped page write-protected on both sides (page-cache pages of
    /// a private file mapping too: they are read-only already, and a write on either side copies them).
    /// </summary>
    private void CopyPageRange(AddressSpace child, ulong start, ulong end, FileMapping? file)
    {
        // The tables are there (AllocChildTables): no allocation below reclaims under the two locks.
        bool outer = t_noReclaimTables;
        t_noReclaimTables = true;
        try
        {
            CopyPageRangeLocked(child, start, end, file);
        }
        finally { t_noReclaimTables = outer; }
    }

    private void CopyPageRangeLocked(AddressSpace child, ulong start, ulong end, FileMapping? file)
    {
        lock (_ptl)
        lock (child._ptl)
        {
            WalkPmds(start, end, (pmdSlot, s, e) =>
            {
                ulong* table = TableOf(*pmdSlot);
                for (ulong va = s; va < e; va += VirtualAddress.PageSize)
                {
                    ulong* slot = table + VirtualAddress.PteIndex(va);
                    ulong pte = Volatile.Read(ref *slot);
                    if (SwapEntry.IsSwapPte(pte))
                    {
                        // copy_nonpresent_pte: the child's entry holds the slot too (swap_duplicate first, so a
                        // failure leaves the child with nothing to give back).
                        ulong* swapDst = child.AllocPteSlot(va, PteFlags.PageTable);
                        if (swapDst == null) throw new OutOfMemoryException($"fork: no memory for the child's page tables at 0x{va:x}.");
                        _kernel.Swap.Duplicate(SwapEntry.FromPte(pte));
                        Volatile.Write(ref *swapDst, pte);
                        child.TablePage(AlignToTable(swapDst))->Data0++;
                        Interlocked.Increment(ref child._swapEnts);
                        continue;
                    }
                    if (!IsMapped(pte)) continue;
                    // The child's table first: running out of memory then leaves no reference or count behind that
                    // the child's teardown would not give back.
                    ulong* dst = child.AllocPteSlot(va, PteFlags.PageTable);
                    if (dst == null) throw new OutOfMemoryException($"fork: no memory for the child's page tables at 0x{va:x}.");
                    if ((pte & (ulong)PteFlags.Special) == 0)
                    {
                        PageFrame* page = _memory.PfnToPage(PageTableEntry.PfnOf(pte));
                        _pages.GetPage(page);
                        Interlocked.Increment(ref page->_mapcount);
                        while ((pte & (ulong)PteFlags.ReadWrite) != 0)
                        {
                            ulong old = Interlocked.CompareExchange(ref *slot, pte & ~(ulong)PteFlags.ReadWrite, pte);
                            if (old == pte) { pte &= ~(ulong)PteFlags.ReadWrite; break; }
                            pte = old;
                        }
                        child.AddRssFor(page, 1, file);
                    }
                    // The child's entry starts old (pte_mkold); PROTNONE entries keep their bits.
                    ulong childPte = (pte & (ulong)PteFlags.Present) != 0 ? pte & ~(ulong)PteFlags.Accessed : pte;
                    Volatile.Write(ref *dst, childPte);
                    child.TablePage(AlignToTable(dst))->Data0++;
                }
            }, null);
        }
    }
}
