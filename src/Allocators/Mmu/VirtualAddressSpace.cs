using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Mmu;

/// <summary>
/// What a user process address space (<see cref="AddressSpace"/>) and the kernel's (<see cref="KernelAddressSpace"/>)
/// share: a PGD of real 4 KiB page-table pages from the page allocator, the hardware page walk with its Accessed/Dirty
/// updates and permission checks at every level, a software TLB per thread, the TLB flushes, and the access API
/// (<see cref="Read{T}"/>, <see cref="Write{T}"/>, <see cref="ReadBytes"/>, ...) that every access goes through:
/// TLB, then page walk, then the derived type's fault handler.
/// </summary>
/// <remarks>
/// <para>Thread-safe. A TLB hit takes no lock, makes no atomic read-modify-write and allocates nothing; a miss walks
/// the tables without a lock; only the fault handler takes locks (the derived type's mmap_lock and the page-table
/// lock).</para>
/// <para>Why a TLB per thread: each thread owns its TLB outright, so hits and fills are plain loads and stores, and
/// the only shared data a hit reads is the address space's TLB generation (read-mostly, so it stays in every core's
/// cache). A flush bumps that generation; every access compares its TLB's generation with it first and drops all its
/// entries on a mismatch (the kernel's tlb_gen scheme; the flushing thread itself flushes only the pages concerned).
/// A flush that precedes freeing pages or page tables also waits until no other thread is still inside an access
/// that began before the bump: each TLB has a Busy flag set around every access (plain stores of constants, so a
/// loop of hits carries no dependency through memory); the flusher issues a process-wide memory barrier
/// (membarrier) and then waits, per thread, until it sees the flag clear or the thread's TLB acknowledging the new
/// generation, which the thread does at the start of its next access. This stands in for the IPI of a TLB
/// shootdown and is skipped when no other thread has a TLB for this address space. A seqlock on a shared TLB would
/// validate reads but cannot undo a write into a page freed meanwhile, hence the per-thread design.</para>
/// <para>Disposing is not thread-safe with concurrent accesses (exiting a process while its threads still run).</para>
/// </remarks>
public abstract unsafe partial class VirtualAddressSpace : IDisposable, IThreadCacheOwner
{
    private protected readonly PageAllocator _pages;
    private protected readonly PhysicalMemory _memory;
    private readonly byte* _physBase;
    private readonly ulong _maxPfn;
    private protected ulong* _pgd;
    private protected PageFrame* _pgdPage;
    private readonly ThreadCacheRegistry _tlbs;
    private readonly bool _userMode;
    private readonly ulong _tlbCacheStart;
    private readonly ulong _tlbCacheEnd;
    private long _tlbGen;
    private int _tlbThreads;
    private long _pageTablePages;
    private bool _disposed;
    private bool _orphaned;

    /// <summary>The page-table lock (mm->page_table_lock): serialises every change of an entry.</summary>
    private protected readonly Lock _ptl = new();

    private protected VirtualAddressSpace(PageAllocator pages, bool userMode, ulong tlbCacheStart, ulong tlbCacheEnd)
    {
        ArgumentNullException.ThrowIfNull(pages);
        _pages = pages;
        _memory = pages.Memory;
        _kasan = _memory.Kasan;
        _physBase = _memory.ContiguousBase;
        _maxPfn = _memory.MaxPfn;
        _userMode = userMode;
        _tlbCacheStart = tlbCacheStart;
        _tlbCacheEnd = tlbCacheEnd;
        _pgdPage = AllocTablePage();
        if (_pgdPage == null) throw new OutOfMemoryException("pgd_alloc: out of memory for the PGD page.");
        _pgd = (ulong*)_pages.AddressOf(_pgdPage);
        _tlbs = new ThreadCacheRegistry(this, ThreadTlb.BlockSize);
        _self = this;
    }

    /// <summary>The page allocator that backs the tables and pages.</summary>
    public PageAllocator Pages => _pages;

    /// <summary>Physical address of the PGD page (what CR3 would hold).</summary>
    public ulong Cr3 => (ulong)_pgdPage->Pfn << VirtualAddress.PageShift;

    /// <summary>Page-table pages owned by this address space, the PGD included (VmPTE / 4 KiB).</summary>
    public long PageTablePages => Interlocked.Read(ref _pageTablePages);

    /// <summary>True after <see cref="Dispose()"/>.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>True when <see cref="Read{T}"/> and friends run in user mode (the User bit is checked).</summary>
    public bool IsUserMode => _userMode;

    /// <summary>Releases every page table, page and TLB the address space owns.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        Dispose(true);
        _disposed = true;
        GC.SuppressFinalize(this);
    }

    /// <summary>Tears the address space down. Derived types free their mappings, then call this base.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        ForgetCachedTlb();
        _tlbs.Dispose();
        if (_pgdPage != null && !IsOrphaned)
        {
            FreeTablePage(_pgdPage);
            _pgdPage = null;
            _pgd = null;
        }
    }

    /// <summary>Throws <see cref="ObjectDisposedException"/> after disposal, or once the memory system under the space is gone.</summary>
    private protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed || Volatile.Read(ref _orphaned), this);

    /// <summary>
    /// The memory system is being disposed under a space nobody disposed: every thread's TLB stops hitting and every
    /// call from here on throws <see cref="ObjectDisposedException"/>. A later <see cref="Dispose()"/> frees nothing
    /// (the pages went with the system).
    /// </summary>
    internal void Orphan()
    {
        Volatile.Write(ref _orphaned, true);
        ForgetCachedTlb();
        Interlocked.Increment(ref _tlbGen);
    }

    /// <summary>True once <see cref="Orphan"/> ran.</summary>
    private protected bool IsOrphaned => Volatile.Read(ref _orphaned);

    /// <summary>Host address of a page frame number, or null when no online memory holds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected byte* PfnToHost(ulong pfn)
    {
        if (_physBase != null) return pfn < _maxPfn ? _physBase + (pfn << VirtualAddress.PageShift) : null;
        return _memory.PfnToVirt(pfn);
    }

    /// <summary>The table an entry points at.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected ulong* TableOf(ulong entry) => (ulong*)PfnToHost(PageTableEntry.PfnOf(entry));

    /// <summary>The page frame behind a table address.</summary>
    private protected PageFrame* TablePage(ulong* table) => _memory.VirtToPage(table);

    /// <summary>Allocates a zeroed page-table page, counted in vmstat and in <see cref="PageTablePages"/>; null when out of memory.</summary>
    private protected PageFrame* AllocTablePage()
    {
        var page = (PageFrame*)t_spareTable;
        if (page != null) t_spareTable = 0;
        else page = _pages.PageTableAlloc(t_noReclaimTables ? (Gfp.Kernel & ~Gfp.DirectReclaim) | Gfp.NoWarn : Gfp.Kernel | Gfp.NoWarn);
        if (page != null) Interlocked.Increment(ref _pageTablePages);
        return page;
    }

    /// <summary>
    /// Set while a fault handler runs: it allocates tables under the ptl, where direct reclaim could not take this
    /// address space's pages, so a failed table allocation is retried by the handler with a table allocated outside
    /// the lock (<see cref="StashSpareTable"/>).
    /// </summary>
    [ThreadStatic] private protected static bool t_noReclaimTables;

    /// <summary>A table page allocated outside the ptl for the next <see cref="AllocTablePage"/> on this thread.</summary>
    [ThreadStatic] private static nint t_spareTable;

    /// <summary>Allocates a table page where reclaim may run, for the next <see cref="AllocTablePage"/>; false when out of memory.</summary>
    private protected bool StashSpareTable()
    {
        if (t_spareTable != 0) return true;
        t_spareTable = (nint)_pages.PageTableAlloc(Gfp.Kernel | Gfp.NoWarn);
        return t_spareTable != 0;
    }

    /// <summary>Frees a stashed table page the handler did not need.</summary>
    private protected void DropSpareTable()
    {
        if (t_spareTable == 0) return;
        _pages.PageTableFree((PageFrame*)t_spareTable);
        t_spareTable = 0;
    }

    /// <summary>Frees a page-table page. The caller has made sure no walker can reach it any more.</summary>
    private protected void FreeTablePage(PageFrame* page)
    {
        Interlocked.Decrement(ref _pageTablePages);
        _pages.PageTableFree(page);
    }
}
