using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Reclaim;

/// <summary>
/// Page reclaim (mm/vmscan.c): scans the per-node LRU lists from their cold ends, deactivates active pages when the
/// inactive list runs short or refaults are activating pages (a new workingset is forming), and hands every cold,
/// unreferenced inactive page to the layer that owns it (<see cref="ILruOwner"/>: swap-out for anonymous memory,
/// write-back or dropping for file pages). Runs as direct reclaim on an allocating thread that may sleep, and in one
/// kswapd thread per node, woken when a zone falls below its low watermark and working until the node is above its
/// high one. Direct reclaim takes only pages of the zones the allocation may use (sc->reclaim_idx: a lowmem allocation
/// on a split arena steps over HighMem pages, and the list sizes it weighs count eligible zones only); kswapd balances
/// the zones up to the highest its wakers may use, and proactive reclaim takes pages of every zone.
/// </summary>
/// <remarks>
/// <para>Locks: none of its own beyond the LRU lock (taken only inside <see cref="Lru"/>) and the page lock, taken
/// with trylock only, so reclaim never waits for a page another thread holds. A thread already reclaiming does not
/// reclaim again from inside (PF_MEMALLOC).</para>
/// <para>Invariants: every page isolated is put back, activated, or freed before the batch ends (no page leaves the
/// LRU for good except by being freed); <c>pgsteal ≤ pgscan</c> for both kswapd and direct reclaim.</para>
/// </remarks>
internal sealed unsafe class Vmscan : IReclaimer, IDisposable
{
    /// <summary>SWAP_CLUSTER_MAX: pages isolated and reclaimed per batch.</summary>
    public const int SwapClusterMax = 32;

    /// <summary>DEF_PRIORITY: the first pass scans 1/2^12 of each list, each further pass twice as much.</summary>
    private const int DefPriority = 12;

    private readonly PageAllocator _pages;
    private readonly Lru _lru;
    private readonly Kswapd[] _kswapd;
    private ILruOwner? _anon;
    private ILruOwner? _file;
    private int _active; // ShrinkNode calls in progress (RemoveAnonOwner waits for them)
    [ThreadStatic] private static bool t_inReclaim;

    public Vmscan(PageAllocator pages)
    {
        _pages = pages;
        _lru = pages.Lru;
        Counters = pages.ReclaimCounters;
        _kswapd = new Kswapd[pages.NodeCount];
        for (int n = 0; n < _kswapd.Length; n++) _kswapd[n] = new Kswapd(KswapdRun, KswapdOops, n);
    }

    /// <summary>The event counters.</summary>
    public ReclaimCounters Counters { get; }

    /// <summary>vm.swappiness: 0..200, the relative cost of reclaiming anonymous memory against file pages.</summary>
    public int Swappiness { get; set; } = 60;

    /// <summary>The anonymous-memory side (the MMU's swap).</summary>
    public void SetAnonOwner(ILruOwner? owner) => Volatile.Write(ref _anon, owner);

    /// <summary>Unregisters <paramref name="owner"/> and returns once no reclaim that may have seen it is still running.</summary>
    public void RemoveOwner(ILruOwner owner)
    {
        Interlocked.CompareExchange(ref _anon, null, owner);
        Interlocked.CompareExchange(ref _file, null, owner);
        var spin = new SpinWait();
        while (Volatile.Read(ref _active) != 0) spin.SpinOnce();
    }

    /// <summary>The file side (the page cache).</summary>
    public void SetFileOwner(ILruOwner? owner) => Volatile.Write(ref _file, owner);

    /// <summary>True while the calling thread is reclaiming (its own allocations must not recurse).</summary>
    public static bool InReclaim => t_inReclaim;

    /// <inheritdoc/>
    public long TryToFreePages(Gfp gfp, int order, int node)
        // SWAP_CLUSTER_MAX, or what the node lacks of its min watermark when it is deeper in (kswapd is behind); only
        // pages of the zones the allocation may use (reclaim_idx = gfp_zone: a lowmem allocation skips HighMem pages).
        => DoTryToFreePages(Math.Max(Math.Max(SwapClusterMax, 1L << order), _pages.NodeShortfall(node, ZoneMark.Min, gfp.HighestZone())), gfp, node, proactive: false, gfp.HighestZone());

    /// <summary>
    /// Proactive reclaim (cgroup v2's memory.reclaim): frees up to <paramref name="pages"/> pages from the LRU lists of
    /// every node, doing what <paramref name="gfp"/> allows. Returns the pages freed.
    /// </summary>
    public long Reclaim(long pages, Gfp gfp)
    {
        long freed = DoTryToFreePages(pages, gfp, firstNode: 0, proactive: true, ZoneType.HighMem);
        if (freed > 0) _pages.DrainAllPages();
        return freed;
    }

    /// <summary>
    /// do_try_to_free_pages: passes over every node from <paramref name="firstNode"/> at falling priorities until
    /// <paramref name="target"/> pages are freed. Proactive reclaim works in batches and stays at a priority while it
    /// pays; an allocation asks each node for all it still lacks. A thread already reclaiming does not start again.
    /// </summary>
    private long DoTryToFreePages(long target, Gfp gfp, int firstNode, bool proactive, ZoneType reclaimIdx)
    {
        if (t_inReclaim) return 0;
        t_inReclaim = true;
        try
        {
            long freed = 0;
            for (int priority = DefPriority; priority >= 0 && freed < target; priority--)
            {
                for (int i = 0; i < _pages.NodeCount && freed < target; i++)
                {
                    int node = (firstNode + i) % _pages.NodeCount;
                    long got;
                    do
                    {
                        got = ShrinkNode(node, proactive ? Math.Min(target - freed, SwapClusterMax) : target - freed, gfp, priority, kswapd: false, reclaimIdx);
                        freed += got;
                    }
                    while (proactive && got > 0 && freed < target);
                }
            }
            for (int n = 0; n < _pages.NodeCount; n++) _lru.SnapshotRefaults(n);
            return freed;
        }
        finally { t_inReclaim = false; }
    }

    /// <inheritdoc/>
    public long ReclaimablePages(int node, ZoneType highestZone)
    {
        long pages = 0;
        if (Volatile.Read(ref _anon) is { CanReclaim: true })
            pages += _lru.Count(node, LruList.InactiveAnon, highestZone) + _lru.Count(node, LruList.ActiveAnon, highestZone);
        if (Volatile.Read(ref _file) is { CanReclaim: true })
            pages += _lru.Count(node, LruList.InactiveFile, highestZone) + _lru.Count(node, LruList.ActiveFile, highestZone);
        return pages;
    }

    /// <inheritdoc/>
    public void WakeKswapd(int node, int order, ZoneType highestZone)
    {
        if ((uint)node >= (uint)_kswapd.Length || _pages.NodeBalanced(node, highestZone)) return;
        _kswapd[node].Wake(highestZone);
    }

    private void KswapdRun(int node, ZoneType highestZone)
    {
        Interlocked.Increment(ref Counters.KswapdWakeups);
        BalanceNode(node, highestZone);
    }

    /// <summary>A kswapd run threw (a bug): the oops goes to the page allocator's warning receivers; the thread ends.</summary>
    private void KswapdOops(int node, Exception e)
        => _pages.ReportOops($"allocators: kswapd{node}: oops, the thread stops (allocations reclaim directly from now on): {e}");

    /// <summary>
    /// kswapd's work for one wake-up (balance_pgdat): reclaims pages of zones up to <paramref name="highestZone"/>, the
    /// highest any waker's allocation may use, until one of those zones is above its high watermark or no pass
    /// makes progress.
    /// </summary>
    internal void BalanceNode(int node, ZoneType highestZone)
    {
        t_inReclaim = true;
        try
        {
            int priority = DefPriority;
            while (!_pages.NodeBalanced(node, highestZone) && priority >= 0)
            {
                long want = Math.Max(SwapClusterMax, _pages.NodeShortfall(node, ZoneMark.High, highestZone));
                long freed = ShrinkNode(node, want, Gfp.Kernel, priority, kswapd: true, highestZone);
                if (freed < want) priority--; // no luck at this depth: scan harder
            }
            _lru.SnapshotRefaults(node);
        }
        finally { t_inReclaim = false; }
    }

    /// <summary>
    /// shrink_node: get_scan_count's split between anonymous and file pages (by swappiness, and only kinds that can
    /// be reclaimed), then batches of shrink_list until <paramref name="nrToReclaim"/> pages are freed or the
    /// scan budget of this priority is spent.
    /// </summary>
    private long ShrinkNode(int node, long nrToReclaim, Gfp gfp, int priority, bool kswapd, ZoneType reclaimIdx)
    {
        Interlocked.Increment(ref _active);
        try { return ShrinkNodeActive(node, nrToReclaim, gfp, priority, kswapd, reclaimIdx); }
        finally { Interlocked.Decrement(ref _active); }
    }

    private long ShrinkNodeActive(int node, long nrToReclaim, Gfp gfp, int priority, bool kswapd, ZoneType reclaimIdx)
    {
        ILruOwner? anon = Volatile.Read(ref _anon);
        ILruOwner? file = Volatile.Read(ref _file);
        bool anonOk = anon != null && anon.CanReclaim && Swappiness > 0;
        bool fileOk = file != null && file.CanReclaim;
        // get_scan_count sizes the lists by the zones the reclaim may take pages from.
        long anonSize = _lru.Count(node, LruList.InactiveAnon, reclaimIdx) + _lru.Count(node, LruList.ActiveAnon, reclaimIdx);
        long fileSize = _lru.Count(node, LruList.InactiveFile, reclaimIdx) + _lru.Count(node, LruList.ActiveFile, reclaimIdx);
        long anonScan = anonOk ? ScanBudget(anonSize, priority) : 0;
        long fileScan = fileOk ? ScanBudget(fileSize, priority) : 0;
        if (anonScan > 0 && fileScan > 0)
        {
            // SCAN_FRACT: swappiness is anon's weight out of 200.
            anonScan = Math.Max(1, anonScan * Swappiness / 200);
            fileScan = Math.Max(1, fileScan * (200 - Swappiness) / 200);
        }
        long freed = 0;
        while ((anonScan > 0 || fileScan > 0) && freed < nrToReclaim)
        {
            if (fileScan > 0)
            {
                int batch = (int)Math.Min(fileScan, SwapClusterMax);
                fileScan -= batch;
                freed += ShrinkList(node, file!, anon: false, batch, gfp, kswapd, reclaimIdx);
            }
            if (anonScan > 0 && freed < nrToReclaim)
            {
                int batch = (int)Math.Min(anonScan, SwapClusterMax);
                anonScan -= batch;
                freed += ShrinkList(node, anon!, anon: true, batch, gfp, kswapd, reclaimIdx);
            }
        }
        return freed;
    }

    /// <summary>The pages of a list of <paramref name="size"/> one pass at <paramref name="priority"/> scans (size &gt;&gt; priority, at least a batch).</summary>
    private static long ScanBudget(long size, int priority) => size == 0 ? 0 : Math.Max(size >> priority, Math.Min(size, SwapClusterMax));

    /// <summary>One batch of one kind: refill the inactive list from the active one when it is low, then shrink the inactive list.</summary>
    private long ShrinkList(int node, ILruOwner owner, bool anon, int batch, Gfp gfp, bool kswapd, ZoneType reclaimIdx)
    {
        LruList inactive = Lru.ListOf(anon, active: false);
        LruList active = Lru.ListOf(anon, active: true);
        // may_deactivate: when refaults are activating pages a new workingset is being established, so stale active
        // pages go to the inactive list even while it is not low.
        if (_lru.RefaultsSinceSnapshot(node, anon) || InactiveIsLow(node, inactive, active, reclaimIdx))
            ShrinkActiveList(node, owner, active, batch, reclaimIdx);
        return ShrinkInactiveList(node, owner, inactive, batch, gfp, kswapd, reclaimIdx);
    }

    /// <summary>inactive_is_low over the eligible zones: below 1 GiB the kernel keeps the lists even (inactive_ratio 1).</summary>
    private bool InactiveIsLow(int node, LruList inactive, LruList active, ZoneType reclaimIdx)
        => _lru.Count(node, inactive, reclaimIdx) < _lru.Count(node, active, reclaimIdx);

    /// <summary>
    /// shrink_active_list: moves a batch from the cold end of the active list to the inactive one, clearing their
    /// accessed bits on the way. PG_referenced stays, as in the kernel: a deactivated page used once more is
    /// activated again at its next scan.
    /// </summary>
    private void ShrinkActiveList(int node, ILruOwner owner, LruList list, int batch, ZoneType reclaimIdx)
    {
        PageFrame** pages = stackalloc PageFrame*[SwapClusterMax];
        int n = _lru.Isolate(node, list, batch, batch, pages, out int scanned, reclaimIdx);
        Interlocked.Add(ref Counters.PgRefill, scanned);
        for (int i = 0; i < n; i++)
        {
            PageFrame* page = pages[i];
            owner.Referenced(page);
            _lru.Putback(page, node, active: false);
            _pages.PutPage(page);
        }
        Interlocked.Add(ref Counters.PgDeactivate, n);
    }

    /// <summary>
    /// shrink_inactive_list: isolates a batch from the cold end and runs shrink_folio_list on each page. The unmaps of
    /// the batch share one TLB shootdown (<see cref="TlbUnmapBatch"/>): every page stays isolated, neither freed nor
    /// back on a list, until it has run.
    /// </summary>
    private long ShrinkInactiveList(int node, ILruOwner owner, LruList list, int batch, Gfp gfp, bool kswapd, ZoneType reclaimIdx)
    {
        PageFrame** pages = stackalloc PageFrame*[SwapClusterMax];
        PageReclaim* outcomes = stackalloc PageReclaim[SwapClusterMax];
        int n = _lru.Isolate(node, list, batch, batch, pages, out int scanned, reclaimIdx);
        Interlocked.Add(ref kswapd ? ref Counters.PgScanKswapd : ref Counters.PgScanDirect, scanned);
        TlbUnmapBatch unmaps = TlbUnmapBatch.Begin();
        try
        {
            for (int i = 0; i < n; i++) outcomes[i] = ShrinkFolio(pages[i], owner, gfp);
        }
        finally
        {
            unmaps.End(); // try_to_unmap_flush, before any page is freed or put back
        }
        long freed = 0;
        int deleted = 0; // pages[0..deleted) wait for one grace period
        for (int i = 0; i < n; i++)
        {
            PageFrame* page = pages[i];
            switch (outcomes[i])
            {
                case PageReclaim.Freed:
                    _pages.FreeIsolatedPage(page);
                    freed++;
                    continue;
                case PageReclaim.Deleted:
                    pages[deleted++] = page; // i >= deleted: the slot is done with
                    continue;
                case PageReclaim.Activate:
                    Interlocked.Increment(ref Counters.PgActivate);
                    _lru.AgeNonresident(node); // workingset_activation: activations age the clock too
                    _lru.Putback(page, node, active: true);
                    break;
                default:
                    _lru.Putback(page, node, active: false);
                    break;
            }
            _pages.PutPage(page);
        }
        if (deleted > 0) freed += FreeDeleted(node, owner, pages, deleted);
        Interlocked.Add(ref kswapd ? ref Counters.PgStealKswapd : ref Counters.PgStealDirect, freed);
        return freed;
    }

    /// <summary>
    /// The pages a batch deleted from their caches: one grace period for all of them (lockless lookups that saw one
    /// are done), then each is frozen and freed, or, still held by such a lookup, back on the inactive list.
    /// </summary>
    private long FreeDeleted(int node, ILruOwner owner, PageFrame** pages, int count)
    {
        _pages.Rcu.SynchronizeRcu();
        long freed = 0;
        for (int i = 0; i < count; i++)
        {
            PageFrame* page = pages[i];
            if (owner.FreezeDeleted(page))
            {
                _pages.FreeIsolatedPage(page);
                freed++;
                continue;
            }
            _lru.Putback(page, node, active: false);
            _pages.PutPage(page);
        }
        return freed;
    }

    /// <summary>
    /// shrink_folio_list for one isolated page: trylock, folio_check_references, then the owner's work. Every mapped
    /// page starts with the reference its fault left, so one PTE reference only marks the page (PG_referenced) and
    /// keeps it for another trip round the inactive list; a reference on a marked page, or from two PTEs, activates it
    /// (anonymous and file pages alike since Linux 5.9).
    /// </summary>
    private PageReclaim ShrinkFolio(PageFrame* page, ILruOwner owner, Gfp gfp)
    {
        if (!PageWait.TryLock(page)) return PageReclaim.Keep;
        try
        {
            if (page->Has(PageFlags.Writeback)) return PageReclaim.Keep;
            int referencedPtes = owner.Referenced(page);
            bool referencedPage = (PageFrame.ClearFlags(page, PageFlags.Referenced) & PageFlags.Referenced) != 0;
            if (referencedPtes > 0)
            {
                PageFrame.SetFlags(page, PageFlags.Referenced);
                return referencedPage || referencedPtes > 1 ? PageReclaim.Activate : PageReclaim.Keep;
            }
            return owner.ReclaimPage(page, gfp, Counters);
        }
        finally
        {
            PageWait.Unlock(page);
        }
    }

    /// <summary>Returns once no reclaim is running and every kswapd is asleep (tests check counts after it).</summary>
    internal void WaitIdle()
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref _active) != 0 || Array.Exists(_kswapd, k => k.Busy)) spin.SpinOnce();
    }

    /// <summary>Stops the kswapd threads.</summary>
    public void Dispose()
    {
        foreach (Kswapd k in _kswapd) k.Dispose();
    }
}
