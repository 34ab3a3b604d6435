using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// do_user_addr_fault: non-canonical -> #GP; kernel half -> vmalloc sync or oops (kernel mode) / SEGV_MAPERR
    /// (user mode); otherwise find the area (growing a stack down if needed), check the access against it, and let
    /// <see cref="HandleMmFault"/> fix the page tables.
    /// </summary>
    private protected override FaultOutcome HandleFault(ulong va, PageFaultErrorCode error, bool fixup)
    {
        ThrowIfDisposed();
        ThrowIfOomKilled();
        bool user = (error & PageFaultErrorCode.User) != 0;
        if (!VirtualAddress.IsCanonical(va))
        {
            if (fixup) return FaultOutcome.Failed;
            if (user)
            {
                Interlocked.Increment(ref _stats.Segv);
                throw new GeneralProtectionFaultException(va, error);
            }
            Interlocked.Increment(ref _stats.Oops);
            throw new KernelOopsException(va, error,
                $"general protection fault, probably for non-canonical address 0x{va:x16}: 0000 [#1] SMP NOPTI\nCPU: {Thread.GetCurrentProcessorId()} UID: 0 PID: {Pid} Comm: {Name}\n");
        }
        if (va >= VirtualAddress.KernelStart)
        {
            if (!user)
            {
                if (VmallocSync(va, error)) return FaultOutcome.Retry;
                if (fixup) return FaultOutcome.Failed;
                throw _kernel.Oops(this, va, error, Pid, Name);
            }
            return BadArea(va, error, SegvCode.MapError, fixup);
        }

        _mmapLock.EnterReadLock();
        try
        {
            VmArea? vma = _vmas.FindVma(va);
            if (vma == null) return BadArea(va, error, SegvCode.MapError, fixup);
            if (vma.Start > va)
            {
                if ((vma.Flags & VmFlags.GrowsDown) == 0) return BadArea(va, error, SegvCode.MapError, fixup);
                // Below a stack: grow it (after this block, with the lock held for writing).
            }
            else
            {
                if (AccessError(vma, error)) return BadArea(va, error, SegvCode.AccessError, fixup);
                bool major = false;
                t_noReclaimTables = true;
                try
                {
                    while (true)
                    {
                        try
                        {
                            ulong swapPte;
                            if (vma.File != null)
                            {
                                FileFault result = HandleFileFault(vma, va, error, out IOException? readError, out swapPte);
                                if (result == FileFault.BusError) return BusError(vma, va, error, fixup, readError);
                                major = result == FileFault.Major;
                            }
                            else
                            {
                                swapPte = HandleMmFault(vma, va, error);
                            }
                            if (swapPte == ShmemFaultPte)
                            {
                                // shmem_fault: the object's page, outside the ptl (it may be read back from swap).
                                SwapFault result = DoShmemFault(vma, va, out IOException? swapError);
                                if (result == SwapFault.BusError) return BusError(vma, va, error, fixup, swapError);
                                major = result == SwapFault.Major;
                            }
                            else if (swapPte != 0)
                            {
                                // do_swap_page: a swap entry (an anonymous page, or a private file area's copy), read outside the ptl.
                                SwapFault result = DoSwapPage(vma, va, error, swapPte, out IOException? swapError);
                                if (result == SwapFault.BusError) return BusError(vma, va, error, fixup, swapError);
                                major = result == SwapFault.Major;
                            }
                            break;
                        }
                        catch (NeedPageException need)
                        {
                            // The handler needed a page under the ptl and none was free: get one where reclaim may run
                            // (no page-table lock held), then handle the fault again with it.
                            if (need == NeedPageException.Table)
                            {
                                if (!StashSpareTable()) throw FaultOom(va);
                            }
                            else
                            {
                                PageFrame* spare = _pages.AllocPages(Gfp.HighUserMovable | Gfp.NoWarn, 0);
                                if (spare == null) throw FaultOom(va);
                                t_sparePage = (nint)spare;
                            }
                        }
                    }
                }
                finally
                {
                    t_noReclaimTables = false;
                    DropSparePage();
                    DropSpareTable();
                }
                if (major)
                {
                    Interlocked.Increment(ref _majFlt);
                    Interlocked.Increment(ref _stats.PgMajFault);
                }
                else
                {
                    Interlocked.Increment(ref _minFlt);
                }
                Interlocked.Increment(ref _stats.PgFault);
                return FaultOutcome.Retry;
            }
        }
        finally { _mmapLock.ExitReadLock(); }

        // expand_stack needs the mmap_lock for writing; then the access is retried (and faults again, into the grown area).
        EnterMmapWrite();
        try
        {
            VmArea? vma = _vmas.FindVma(va);
            if (vma == null) return BadArea(va, error, SegvCode.MapError, fixup);
            if (vma.Start > va && !ExpandStack(vma, va)) return BadArea(va, error, SegvCode.MapError, fixup);
            return FaultOutcome.Retry;
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// The vmalloc fault (vmalloc_fault): for a not-present kernel-mode fault, copies a kernel-half PGD entry the kernel
    /// has and this process lacks. When the entry is already there (another thread of this process copied it after
    /// this thread's walk missed it), the fault is spurious if the kernel's reference tables map the address, 4 KiB or
    /// 2 MiB: retry then too.
    /// </summary>
    private bool VmallocSync(ulong va, PageFaultErrorCode error)
    {
        if ((error & (PageFaultErrorCode.Protection | PageFaultErrorCode.ReservedBit)) != 0) return false;
        int index = VirtualAddress.PgdIndex(va);
        ulong reference = _kernel.ReferencePgdEntry(index);
        if ((reference & (ulong)PteFlags.Present) == 0) return false;
        lock (_ptl)
        {
            if (Volatile.Read(ref _pgd[index]) != reference)
            {
                Volatile.Write(ref _pgd[index], reference);
                Interlocked.Increment(ref _stats.VmallocSync);
                return true;
            }
        }
        return _kernel.MapsAddress(va);
    }

    /// <summary>
    /// The kernel unhooked one of its shared tables in [<paramref name="start"/>, <paramref name="end"/>): returns once
    /// no thread of this process is still inside an access that began before, so the table may be freed (this
    /// process's kernel-mode walks go through the same tables; its TLB never caches kernel addresses).
    /// </summary>
    internal void WaitForKernelWalks(ulong start, ulong end) => Flush(start, end, waitForAccesses: true);

    /// <summary>access_error: does the area allow the access at all?</summary>
    private static bool AccessError(VmArea vma, PageFaultErrorCode error)
    {
        if ((error & PageFaultErrorCode.Write) != 0) return (vma.Flags & VmFlags.Write) == 0;
        if ((error & PageFaultErrorCode.InstructionFetch) != 0) return (vma.Flags & VmFlags.Exec) == 0;
        if ((error & PageFaultErrorCode.Protection) != 0) return true;
        return (vma.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0;
    }

    /// <summary>bad_area: SIGSEGV for a user access, the fix-up for a uaccess routine, an oops for any other kernel access.</summary>
    private FaultOutcome BadArea(ulong va, PageFaultErrorCode error, SegvCode code, bool fixup)
    {
        if (fixup) return FaultOutcome.Failed;
        if ((error & PageFaultErrorCode.User) == 0) throw _kernel.Oops(this, va, error, Pid, Name);
        Interlocked.Increment(ref _stats.Segv);
        throw SegmentationFaultException.Create(va, code, error, Name, Pid);
    }

    /// <summary>expand_stack: grows a GrowsDown area down to the page of <paramref name="va"/>, keeping the guard gap and RLIMIT_STACK.</summary>
    private bool ExpandStack(VmArea vma, ulong va)
    {
        ulong newStart = VirtualAddress.PageAlignDown(va);
        if (newStart < VirtualAddress.MmapMinAddr || vma.End - newStart > StackLimit) return false;
        VmArea? prev = vma.Prev;
        if (prev != null && prev.End + StackGuardGap > newStart) return false;
        vma.PgOff -= (vma.Start - newStart) >> VirtualAddress.PageShift; // expand_downwards keeps the pages' linear indices
        vma.Start = newStart; // order in the tree is unchanged: the gap below was free
        Interlocked.Increment(ref _stats.StackGrowth);
        return true;
    }

    /// <summary>
    /// handle_mm_fault: allocates the tables down to the PTE, then a huge page, a demand-zero page, the zero page, a
    /// shared page, or a copy-on-write break, as the entry and the access need. Under the mmap_lock and the ptl.
    /// Returns the entry when it is a swap entry (do_swap_page's case, handled outside the ptl), else 0.
    /// </summary>
    private ulong HandleMmFault(VmArea vma, ulong va, PageFaultErrorCode error)
    {
        bool write = (error & PageFaultErrorCode.Write) != 0;
        lock (_ptl)
        {
            ulong* pmdSlot = AllocPmdSlot(va, PteFlags.PageTable);
            if (pmdSlot == null) throw NeedPageException.Table;
            ulong pmd = Volatile.Read(ref *pmdSlot);
            if (pmd == 0 && HugeEligible(vma, va))
            {
                if (DoHugeAnonymousPage(vma, va, pmdSlot)) return 0;
                Interlocked.Increment(ref _stats.ThpFaultFallback);
            }
            if ((pmd & (ulong)PteFlags.Huge) != 0)
            {
                // Huge pages are exclusive (fork splits them): a write fault makes the PMD writable when the area allows.
                if (write && (pmd & (ulong)PteFlags.ReadWrite) == 0 && (vma.Flags & VmFlags.Write) != 0 && (pmd & (ulong)PteFlags.Present) != 0)
                    Volatile.Write(ref *pmdSlot, pmd | (ulong)PteFlags.ReadWrite | (ulong)PteFlags.Dirty);
                return 0;
            }
            ulong* ptep = AllocLowerTable(pmdSlot, VirtualAddress.PteIndex(va), PteFlags.PageTable);
            if (ptep == null) throw NeedPageException.Table;
            ulong pte = Volatile.Read(ref *ptep);
            if (pte == 0)
            {
                if (vma.Shared != null) return ShmemFaultPte;
                DoAnonymousPage(vma, va, ptep, write);
                return 0;
            }
            if (SwapEntry.IsSwapPte(pte)) return pte;
            if (write && (pte & (ulong)PteFlags.Present) != 0 && (pte & (ulong)PteFlags.ReadWrite) == 0) DoWpPage(vma, va, ptep, pte);
            // Otherwise a spurious fault (another thread fixed it, or a stale TLB): the retried walk sets Accessed/Dirty.
            return 0;
        }
    }

    private static OutOfMemoryException FaultOom(ulong va)
        => new($"Out of memory handling a page fault at 0x{va:x} (VM_FAULT_OOM).");

    /// <summary><see cref="HandleMmFault"/>'s answer for an empty entry of a shared anonymous area: the shmem fault runs outside the ptl.</summary>
    private const ulong ShmemFaultPte = (ulong)PteFlags.Present; // never a swap entry

    /// <summary>
    /// shmem_fault under the mmap_lock for reading: the object's page (a new zeroed one, or one read back from swap),
    /// locked, then mapped under the ptl if the entry is still empty.
    /// </summary>
    private SwapFault DoShmemFault(VmArea vma, ulong va, out IOException? ioError)
    {
        ioError = null;
        PageFrame* page;
        bool major;
        try
        {
            page = vma.Shared!.GetLockedPage(vma.PageIndex(va), out major);
        }
        catch (IOException e)
        {
            ioError = e;
            return SwapFault.BusError;
        }
        if (page == null) throw FaultOom(va);
        bool mapped = false;
        try
        {
            lock (_ptl)
            {
                ulong* ptep = FindPteSlot(va);
                if (ptep != null && Volatile.Read(ref *ptep) == 0)
                {
                    Interlocked.Increment(ref page->_mapcount);
                    Volatile.Write(ref *ptep, PageTableEntry.Make(page->Pfn, VmPageProt(vma.Flags)).Value);
                    TablePage(AlignToTable(ptep))->Data0++;
                    AddRss(anon: false, 1);
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

    /// <summary>do_anonymous_page on an empty entry of a private area.</summary>
    private void DoAnonymousPage(VmArea vma, ulong va, ulong* ptep, bool write)
    {
        PteFlags prot = VmPageProt(vma.Flags);
        PageFrame* tablePage = TablePage(AlignToTable(ptep));
        if (!write)
        {
            // Read fault: map the shared zero page read-only; the first write replaces it.
            Volatile.Write(ref *ptep, PageTableEntry.Make(_kernel.ZeroPfn, prot & ~PteFlags.ReadWrite).MkSpecial().Value);
            tablePage->Data0++;
            Interlocked.Increment(ref _stats.ZeroPageMap);
            return;
        }
        PageFrame* fresh = AllocAnonPage(vma, va, zero: true);
        Volatile.Write(ref *ptep, PageTableEntry.Make(fresh->Pfn, prot | PteFlags.ReadWrite | PteFlags.Dirty).Value);
        tablePage->Data0++;
        AddRss(anon: true, 1);
    }

    /// <summary>
    /// A new anonymous page for <paramref name="va"/> of <paramref name="vma"/>, mapped once: its anon_vma family and
    /// linear index recorded for the rmap (page_add_new_anon_rmap), and on the inactive anon LRU (folio_add_lru_vma).
    /// </summary>
    private PageFrame* AllocAnonPage(VmArea vma, ulong va, bool zero)
    {
        var page = (PageFrame*)t_sparePage;
        if (page != null)
        {
            t_sparePage = 0;
            if (zero) System.Runtime.InteropServices.NativeMemory.Clear(_pages.AddressOf(page), VirtualAddress.PageSize);
        }
        else
        {
            // Under the ptl: no direct reclaim here (its rmap walks would need this very lock), only kswapd's help.
            page = _pages.AllocPages(AnonUnderPtlGfp | (zero ? Gfp.Zero : 0), 0);
            if (page == null) throw NeedPageException.Anon;
        }
        page->FlagsAndZone |= (uint)(PageFlags.Anon | PageFlags.SwapBacked);
        page->_mapcount = 1;
        page->Private = (nuint)AnonFamily.Id;
        page->Data0 = vma.PageIndex(va);
        _pages.Lru.Add(page, _pages.NodeOf(page));
        return page;
    }

    private const Gfp AnonUnderPtlGfp = (Gfp.HighUserMovable & ~Gfp.DirectReclaim) | Gfp.NoWarn;

    /// <summary>A page the fault handler allocated outside the ptl for the next <see cref="AllocAnonPage"/> on this thread.</summary>
    [ThreadStatic] private static nint t_sparePage;

    private void DropSparePage()
    {
        if (t_sparePage == 0) return;
        _pages.FreePages((PageFrame*)t_sparePage, 0);
        t_sparePage = 0;
    }

    /// <summary>Thrown (one shared instance, no allocation) when a page is needed under the ptl and only reclaim could give one.</summary>
    private sealed class NeedPageException : Exception
    {
        /// <summary>A page-table page was needed.</summary>
        public static readonly NeedPageException Table = new();

        /// <summary>An anonymous page was needed.</summary>
        public static readonly NeedPageException Anon = new();
    }

    /// <summary>
    /// do_wp_page: a write to a present read-only entry in a writable area. Shared: make it writable. Private: the zero
    /// page is replaced by a fresh page; an exclusive anonymous page is reused; a shared one is copied.
    /// </summary>
    private void DoWpPage(VmArea vma, ulong va, ulong* ptep, ulong pte)
    {
        ulong page4k = VirtualAddress.PageAlignDown(va);
        if (vma.IsShared)
        {
            Volatile.Write(ref *ptep, pte | (ulong)PteFlags.ReadWrite | (ulong)PteFlags.Dirty);
            return;
        }
        PteFlags prot = VmPageProt(vma.Flags) | PteFlags.ReadWrite | PteFlags.Dirty | PteFlags.Accessed;
        if ((pte & (ulong)PteFlags.Special) != 0)
        {
            PageFrame* fresh = AllocAnonPage(vma, va, zero: true);
            ReplacePte(ptep, PageTableEntry.Make(fresh->Pfn, prot).Value, page4k);
            AddRss(anon: true, 1);
            return;
        }
        PageFrame* old = _memory.PfnToPage(PageTableEntry.PfnOf(pte));
        // A page left in the swap cache holds the cache's reference too (one a fork shared, now mapped here alone):
        // the slot goes first.
        if (old->Has(PageFlags.Anon) && old->Has(PageFlags.SwapCache) && Volatile.Read(ref old->_refcount) == 2) _kernel.Swap.TryFreeSwap(old);
        if (old->Has(PageFlags.Anon) && Volatile.Read(ref old->_refcount) == 1)
        {
            // wp_page_reuse: nobody else holds the page. Upgrading permissions needs no flush.
            Volatile.Write(ref *ptep, pte | (ulong)PteFlags.ReadWrite | (ulong)PteFlags.Dirty | (ulong)PteFlags.Accessed);
            Interlocked.Increment(ref _cowReuses);
            Interlocked.Increment(ref _stats.CowReuse);
            return;
        }
        // wp_page_copy
        PageFrame* copy = AllocAnonPage(vma, va, zero: false);
        Buffer.MemoryCopy(_pages.AddressOf(old), _pages.AddressOf(copy), VirtualAddress.PageSize, VirtualAddress.PageSize);
        ReplacePte(ptep, PageTableEntry.Make(copy->Pfn, prot).Value, page4k);
        Interlocked.Decrement(ref old->_mapcount);
        _pages.PutPage(old);
        Interlocked.Increment(ref _cowFaults);
        Interlocked.Increment(ref _stats.CowFault);
    }

    /// <summary>ptep_clear_flush + set_pte_at: no thread can use the old translation once the new one is visible.</summary>
    private void ReplacePte(ulong* ptep, ulong value, ulong va)
    {
        Interlocked.Exchange(ref *ptep, 0);
        Flush(va, va + VirtualAddress.PageSize, waitForAccesses: true);
        Volatile.Write(ref *ptep, value);
    }

    private static bool HugeEligible(VmArea vma, ulong va)
    {
        if ((vma.Flags & VmFlags.HugePage) == 0 || vma.IsShared || vma.File != null) return false;
        ulong haddr = va & ~(VirtualAddress.PmdSize - 1);
        return haddr >= vma.Start && haddr + VirtualAddress.PmdSize <= vma.End;
    }

    /// <summary>
    /// do_huge_pmd_anonymous_page: a zeroed order-9 page mapped by one PMD with PSE, and a page table deposited with it
    /// for the day it is split. False when either cannot be had.
    /// </summary>
    private bool DoHugeAnonymousPage(VmArea vma, ulong va, ulong* pmdSlot)
    {
        PageFrame* deposit = AllocTablePage();
        if (deposit == null) return false;
        // GFP_TRANSHUGE_LIGHT: no direct reclaim. Without compaction, freeing pages rarely frees a whole 2 MiB block, so
        // under pressure the fault falls back to a base page at once instead of swapping memory out for nothing.
        PageFrame* page = _pages.AllocPages((Gfp.HighUserMovable & ~Gfp.DirectReclaim) | Gfp.Zero | Gfp.NoWarn | Gfp.NoRetry, VirtualAddress.HugePageOrder);
        if (page == null)
        {
            FreeTablePage(deposit); // never reachable by a walker
            return false;
        }
        page->FlagsAndZone |= (uint)(PageFlags.Anon | PageFlags.SwapBacked);
        page->_mapcount = 1;
        // The rmap names its split pages will carry (a huge page stays off the LRU until it is split).
        page->Private = (nuint)AnonFamily.Id;
        page->Data0 = vma.PageIndex(va & ~(VirtualAddress.PmdSize - 1));
        PteFlags prot = VmPageProt(vma.Flags) | PteFlags.Huge;
        if ((vma.Flags & VmFlags.Write) != 0) prot |= PteFlags.ReadWrite | PteFlags.Dirty;
        DepositTable(pmdSlot, deposit);
        Volatile.Write(ref *pmdSlot, PageTableEntry.Make(page->Pfn, prot).Value);
        TablePage(AlignToTable(pmdSlot))->Data0++;
        AddRss(anon: true, VirtualAddress.HugePagePages);
        Interlocked.Increment(ref _stats.ThpFaultAlloc);
        return true;
    }
}
