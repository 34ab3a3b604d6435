using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>
/// What the page allocator asks of reclaim (mm/vmscan.c), the one sanctioned call upward: the layers that own
/// reclaimable pages (the MMU's anonymous memory and swap, the page cache) register one.
/// </summary>
/// <summary>A zone watermark (enum zone_watermarks).</summary>
internal enum ZoneMark
{
    /// <summary>WMARK_MIN.</summary>
    Min,
    /// <summary>WMARK_LOW.</summary>
    Low,
    /// <summary>WMARK_HIGH.</summary>
    High,
}

internal interface IReclaimer
{
    /// <summary>
    /// try_to_free_pages: direct reclaim on the allocating thread for an allocation of <paramref name="order"/> that
    /// failed, doing only what <paramref name="gfp"/> allows (no swap I/O without __GFP_IO, no file-system work
    /// without __GFP_FS). Returns the pages freed.
    /// </summary>
    long TryToFreePages(Gfp gfp, int order, int node);

    /// <summary>
    /// Pages of zones up to <paramref name="highestZone"/> on <paramref name="node"/>'s LRU lists that reclaim could take
    /// at all (file pages, and anonymous ones while swap has room): should_reclaim_retry keeps a sleeping allocation
    /// retrying while there are some.
    /// </summary>
    long ReclaimablePages(int node, ZoneType highestZone);

    /// <summary>wakeup_kswapd: a zone of <paramref name="node"/> an allocation may use (up to <paramref name="highestZone"/>) fell below its low watermark.</summary>
    void WakeKswapd(int node, int order, ZoneType highestZone);
}

public sealed unsafe partial class PageAllocator
{
    private readonly Lru _lru;
    private IReclaimer? _reclaimer;
    private Func<Gfp, int, bool>? _oomKiller;
    private readonly Lock _reclaimerLock = new();
    private long _allocStallNormal;
    private long _allocStallMovable;

    /// <summary>The per-node LRU lists of the pages reclaim may take.</summary>
    internal Lru Lru => _lru;

    /// <summary>Registers the reclaimer the slow path calls (tests may put their own in place of the vmscan reclaimer).</summary>
    internal void SetReclaimer(IReclaimer? reclaimer) => Volatile.Write(ref _reclaimer, reclaimer);

    /// <summary>Times an allocation entered direct reclaim (vmstat allocstall_normal plus allocstall_movable).</summary>
    public long DirectReclaimStalls => Volatile.Read(ref _allocStallNormal) + Volatile.Read(ref _allocStallMovable);

    /// <summary>The reclaim and swap event counters (vmstat).</summary>
    public ReclaimCounters ReclaimCounters { get; } = new();

    /// <summary>
    /// The reclaimer, made by <paramref name="create"/> (and from then on called by the slow path) the first time a
    /// layer registers reclaimable pages.
    /// </summary>
    internal IReclaimer GetOrCreateReclaimer(Func<IReclaimer> create)
    {
        lock (_reclaimerLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            IReclaimer? reclaimer = Volatile.Read(ref _reclaimer);
            if (reclaimer == null)
            {
                reclaimer = create();
                SetReclaimer(reclaimer);
            }
            return reclaimer;
        }
    }

    /// <summary>
    /// Registers out_of_memory: called when reclaim (if any) made no progress for an allocation that may not fail
    /// quietly; true when memory was freed (a process killed). The MMU registers it when it is built, as every kernel
    /// has one whether or not it can reclaim.
    /// </summary>
    internal void SetOomKiller(Func<Gfp, int, bool> oom) => Volatile.Write(ref _oomKiller, oom);

    /// <summary>Unregisters <paramref name="oom"/> if it is the OOM killer (its kernel is going away).</summary>
    internal void ClearOomKiller(Func<Gfp, int, bool> oom) => Interlocked.CompareExchange(ref _oomKiller, null, oom);

    /// <summary>The reclaimer, if one was made.</summary>
    internal IReclaimer? Reclaimer => Volatile.Read(ref _reclaimer);

    private void DisposeReclaimer()
    {
        IReclaimer? reclaimer;
        lock (_reclaimerLock)
        {
            reclaimer = Volatile.Read(ref _reclaimer);
            SetReclaimer(null);
        }
        (reclaimer as IDisposable)?.Dispose();
    }

    /// <summary>The node of the zone <paramref name="page"/> belongs to (page_to_nid).</summary>
    internal int NodeOf(PageFrame* page) => _zones[page->ZoneId].Node;

    /// <summary>
    /// pgdat_balanced: some zone of <paramref name="node"/> that may serve <paramref name="highestZone"/> has free
    /// pages above its high watermark, so kswapd may sleep.
    /// </summary>
    internal bool NodeBalanced(int node, ZoneType highestZone = ZoneType.HighMem)
    {
        bool any = false;
        for (int z = 0; z <= (int)highestZone; z++)
        {
            ZoneData* zone = _zones + node * ZonesPerNode + z;
            if (zone->ManagedPages == 0) continue;
            any = true;
            if (Volatile.Read(ref zone->FreePages) > zone->WatermarkHigh + zone->LowmemReserve[(int)highestZone]) return true;
        }
        return !any;
    }

    /// <summary>
    /// Pages <paramref name="node"/> lacks to reach <paramref name="mark"/> in the zone up to
    /// <paramref name="highestZone"/> that lacks most (kswapd's target is the high mark).
    /// </summary>
    internal long NodeShortfall(int node, ZoneMark mark = ZoneMark.High, ZoneType highestZone = ZoneType.HighMem)
    {
        long need = 0;
        for (int z = 0; z <= (int)highestZone; z++)
        {
            ZoneData* zone = _zones + node * ZonesPerNode + z;
            if (zone->ManagedPages == 0) continue;
            long target = mark switch { ZoneMark.Min => zone->WatermarkMin, ZoneMark.Low => zone->WatermarkLow, _ => zone->WatermarkHigh };
            need = Math.Max(need, target + 1 - Volatile.Read(ref zone->FreePages));
        }
        return Math.Max(need, 0);
    }

    /// <summary>An isolated page its owner removed with its references frozen at zero (folio_ref_freeze): freed (free_unref_folios).</summary>
    internal void FreeIsolatedPage(PageFrame* page)
    {
        PageFrame.ClearFlags(page, PageFlags.Lru | PageFlags.Active | PageFlags.Referenced | PageFlags.SwapBacked
            | PageFlags.Anon | PageFlags.Dirty | PageFlags.Uptodate | PageFlags.SwapCache | PageFlags.Locked);
        page->_mapcount = 0;
        Volatile.Write(ref page->_refcount, 1); // frozen at zero by the owner: nobody else can reach it
        FreePages(page, 0);
    }

    /// <summary>True when the slow path may run direct reclaim for <paramref name="gfp"/>.</summary>
    private bool ReclaimEnabled(Gfp gfp) => (gfp & Gfp.DirectReclaim) != 0 && Volatile.Read(ref _reclaimer) != null;

    /// <summary>
    /// should_reclaim_retry after a round without progress: up to MAX_RECLAIM_RETRIES, and beyond that (a while
    /// longer) only while reclaimable pages remain — reclaim only trylocks the address spaces it walks, so a round can
    /// find every candidate busy.
    /// </summary>
    private bool ShouldRetryReclaim(int noProgressRounds, int node, Gfp gfp)
        => noProgressRounds <= MaxReclaimRetries
        || (noProgressRounds <= MaxContendedRetries && (Volatile.Read(ref _reclaimer)?.ReclaimablePages(node, gfp.HighestZone()) ?? 0) > 0);

    /// <summary>Rounds without progress a sleeping allocation waits while reclaimable pages remain (about a second).</summary>
    private const int MaxContendedRetries = 1000;

    /// <summary>The slow path's direct reclaim step: true when it freed something worth retrying for.</summary>
    private bool DirectReclaim(Gfp gfp, int order, int node)
    {
        IReclaimer? reclaimer = Volatile.Read(ref _reclaimer);
        if (reclaimer == null || (gfp & Gfp.DirectReclaim) == 0) return false;
        Interlocked.Increment(ref (gfp & Gfp.Movable) != 0 ? ref _allocStallMovable : ref _allocStallNormal);
        long freed = reclaimer.TryToFreePages(gfp, order, node);
        if (freed > 0) DrainAllPages();
        return freed > 0;
    }

    private void WakeKswapd(Gfp gfp, int order, int node)
    {
        if ((gfp & Gfp.KswapdReclaim) != 0) Volatile.Read(ref _reclaimer)?.WakeKswapd(node, order, gfp.HighestZone());
    }

    /// <summary>The slow path's last resort for a sleeping allocation that may not fail quietly: the OOM killer.</summary>
    private bool InvokeOomKiller(Gfp gfp, int order)
    {
        Func<Gfp, int, bool>? oom = Volatile.Read(ref _oomKiller);
        if (oom == null || (gfp & (Gfp.DirectReclaim | Gfp.Fs)) != (Gfp.DirectReclaim | Gfp.Fs)) return false;
        // __GFP_NORETRY and __GFP_RETRY_MAYFAIL fail instead; costly orders too (they are not retried implicitly).
        if ((gfp & Gfp.NoFail) == 0 && ((gfp & (Gfp.NoRetry | Gfp.RetryMayFail)) != 0 || order > CostlyOrder)) return false;
        return oom(gfp, order);
    }
}
