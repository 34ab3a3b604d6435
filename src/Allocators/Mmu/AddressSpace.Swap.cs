using Allocators.Filemap;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

/// <summary>How a fault on a swap entry ended.</summary>
internal enum SwapFault
{
    /// <summary>The page was in the swap cache (or the entry went meanwhile: the access is retried).</summary>
    Minor,
    /// <summary>The page was read from the swap device.</summary>
    Major,
    /// <summary>The swap device could not be read (VM_FAULT_SIGBUS).</summary>
    BusError,
}

public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// do_swap_page under the mmap_lock for reading: finds or reads the page of the entry (<see cref="AnonSwap.SwapIn"/>),
    /// then, under the page lock and the ptl and only if the entry is still there, maps it and drops the entry's
    /// count. The last PTE of a slot maps the page writable in a writable private area; a write fault takes it out of
    /// the swap cache (dirty), while after a read it stays there, clean, so reclaim can drop it again without a write
    /// unless the entry's Dirty says it was written since (or swap is more than half full). While other PTEs (a fork's) still hold the slot,
    /// the page is mapped read-only and shared, and a write copies it like any shared anonymous page.
    /// </summary>
    private SwapFault DoSwapPage(VmArea vma, ulong va, PageFaultErrorCode error, ulong swapPte, out IOException? ioError)
    {
        ioError = null;
        AnonSwap swap = _kernel.Swap;
        SwapEntry entry = SwapEntry.FromPte(swapPte);
        PageFrame* page;
        bool major;
        try
        {
            page = swap.SwapIn(entry, PageFlags.Anon, (nuint)AnonFamily.Id, vma.PageIndex(va), out major);
        }
        catch (IOException e)
        {
            ioError = e;
            return SwapFault.BusError;
        }
        if (page == null) return SwapFault.Minor;
        bool mapped = false;
        try
        {
            lock (_ptl)
            {
                ulong* ptep = FindPteSlot(va);
                if (ptep != null && Volatile.Read(ref *ptep) == swapPte)
                {
                    // Exclusive (the kernel's PageAnonExclusive): no other PTE holds the slot or maps the page. After a
                    // read it may stay in the swap cache, mapped writable but clean: a later write sets the entry's
                    // Dirty, which reclaim's unmap folds into the page, so the copy on swap is never taken for current.
                    bool write = (error & PageFaultErrorCode.Write) != 0;
                    bool exclusive = swap.SwapFreeMapped(page, entry, keepCache: !write) && Volatile.Read(ref page->_mapcount) == 0;
                    PteFlags prot = VmPageProt(vma.Flags) | PteFlags.Accessed;
                    if (exclusive && (vma.Flags & VmFlags.Write) != 0 && !vma.IsShared)
                    {
                        prot |= PteFlags.ReadWrite;
                        if (write) prot |= PteFlags.Dirty;
                    }
                    else
                    {
                        prot &= ~PteFlags.ReadWrite;
                    }
                    // folio_add_anon_rmap: a page read ahead, or cached by another process, is this family's now.
                    page->Private = (nuint)AnonFamily.Id;
                    page->Data0 = vma.PageIndex(va);
                    Interlocked.Increment(ref page->_mapcount);
                    AddRss(anon: true, 1);
                    Interlocked.Decrement(ref _swapEnts);
                    Volatile.Write(ref *ptep, PageTableEntry.Make(page->Pfn, prot).Value);
                    mapped = true; // the lookup's reference is the mapping's now
                }
            }
        }
        finally
        {
            PageWait.Unlock(page);
            if (!mapped) _pages.PutPage(page);
        }
        return major ? SwapFault.Major : SwapFault.Minor;
    }

    /// <summary>unuse_mm for swapoff: swaps in every PTE of this address space that holds an entry of swap type <paramref name="type"/>.</summary>
    /// <exception cref="OutOfMemoryException">No page for one of them.</exception>
    /// <exception cref="IOException">The device could not be read.</exception>
    internal void UnuseSwap(int type)
    {
        _mmapLock.EnterReadLock();
        try
        {
            if (_mappersGone || IsDisposed) return;
            for (VmArea? v = _vmas.First; v != null; v = v.Next)
            {
                if (v.IsShared) continue;
                foreach ((ulong va, ulong pte) in SwapPtesIn(v.Start, v.End, type))
                {
                    if (DoSwapPage(v, va, PageFaultErrorCode.User, pte, out IOException? error) == SwapFault.BusError)
                        throw new IOException($"swapoff: {Name}[{Pid}] 0x{va:x}: {error!.Message}", error);
                }
            }
        }
        finally { _mmapLock.ExitReadLock(); }
    }

    /// <summary>The swap PTEs of <paramref name="type"/> in [start, end), as of the call.</summary>
    private List<(ulong Va, ulong Pte)> SwapPtesIn(ulong start, ulong end, int type)
    {
        var found = new List<(ulong, ulong)>();
        lock (_ptl)
        {
            WalkPmds(start, end, (pmdSlot, s, e) =>
            {
                if ((*pmdSlot & (ulong)PteFlags.Huge) != 0) return;
                ulong* table = TableOf(*pmdSlot);
                for (ulong va = s; va < e; va += VirtualAddress.PageSize)
                {
                    ulong pte = Volatile.Read(ref table[VirtualAddress.PteIndex(va)]);
                    if (SwapEntry.IsSwapPte(pte) && SwapEntry.FromPte(pte).Type == type) found.Add((va, pte));
                }
            }, null);
        }
        return found;
    }

    /// <summary>Swap entries in this address space's page tables (MM_SWAPENTS, the VmSwap of /proc/pid/status in pages).</summary>
    public long SwapEntries => Volatile.Read(ref _swapEnts);
}
