using System.Diagnostics;
using System.Runtime.CompilerServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private const Gfp FastPathExcluded = Gfp.MemAlloc | Gfp.ThisNode | Gfp.NoFail; // NoFail: its checks live on the slow path
    private long _allocFailures;
    private long _allocFailuresInjected;
    private const int MaxReclaimRetries = 16; // MAX_RECLAIM_RETRIES: rounds without progress

    /// <summary>Allocates 2^<paramref name="order"/> contiguous pages on the current node (alloc_pages).</summary>
    /// <returns>The first page's frame, or null when the allocation fails (never with <see cref="Gfp.NoFail"/>).</returns>
    /// <exception cref="ArgumentException"><see cref="Gfp.NoFail"/> without <see cref="Gfp.DirectReclaim"/>.</exception>
    /// <remarks>
    /// The plain call is the fast path (a handle from <see cref="ThisThread"/> only skips the thread's record lookup): on
    /// one node a request the per-thread lists may serve pops the preferred zone's list inline; everything else is
    /// <see cref="AllocPagesNode"/>.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* AllocPages(Gfp gfp, int order)
    {
        if (_nodeCount == 1 && CanUsePcpOnNode0(gfp, order))
        {
            ThreadCacheHeader* cache = _pcp.Current;
            if (cache != null)
            {
                PageFrame* page = AllocFromPcp(cache, PcpLists(cache), Counters(cache), 0, 0, gfp, order);
                if (page != null) return page;
            }
        }
        return AllocPagesNode(-1, gfp, order);
    }

    /// <summary>Allocates 2^<paramref name="order"/> pages preferring <paramref name="node"/> (-1: the current node) (alloc_pages_node).</summary>
    public PageFrame* AllocPagesNode(int node, Gfp gfp, int order)
    {
        int cpuNode = CurrentNode;
        if (node < 0) node = cpuNode;
        if (CanUsePcp(node, gfp, order))
        {
            ThreadCacheHeader* cache = _pcp.Current;
            if (cache != null)
            {
                PageFrame* page = AllocFromPcp(cache, PcpLists(cache), Counters(cache), node, cpuNode, gfp, order);
                if (page != null) return page;
            }
        }
        return AllocPagesSlow(gfp, order, node, cpuNode);
    }

    /// <summary>
    /// The calling thread's page lists (<see cref="PageAllocatorThread"/>): take it once before a run of page
    /// operations on one thread to skip the per-call thread-local lookup.
    /// </summary>
    public PageAllocatorThread ThisThread()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ThreadCacheHeader* cache = _pcp.GetOrCreateCurrent();
        return new PageAllocatorThread(this, cache, PcpLists(cache), Counters(cache), _nodeCount == 1 ? PreferredZone(0, 0) : -1);
    }

    /// <summary>True when a request may be served from a per-thread list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool CanUsePcp(int node, Gfp gfp, int order) => (uint)node < (uint)_nodeCount && CanUsePcpOnNode0(gfp, order);

    /// <summary><see cref="CanUsePcp"/> for node 0 (always a valid node).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool CanUsePcpOnNode0(Gfp gfp, int order)
        => (uint)order <= PcpMaxOrder && (gfp & FastPathExcluded) == 0 && !FaultInjection.Enabled;

    /// <summary>Takes a block off the thread's list of the preferred zone while it is above its low watermark; null otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PageFrame* AllocFromPcp(ThreadCacheHeader* cache, PcpList* lists, ZoneEventCounters* counters, int node, int cpuNode, Gfp gfp, int order)
    {
        int zoneId = PreferredZone(node, gfp);
        if (zoneId < 0) return null;
        ZoneData* zone = _zones + zoneId;
        // Local/other is about the node of the zone that served the page (zone_statistics), which is
        // not the requested node when that node lacks the zone (e.g. DMA on node 0 only).
        return TakeFromPcpList(cache, lists + zoneId * PcpOrders + order, zone, counters + zoneId, zone->Node != cpuNode, gfp, order);
    }

    /// <summary>The first zone of the zonelist for <paramref name="node"/> and the zone modifiers of <paramref name="gfp"/>; -1 for none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int PreferredZone(int node, Gfp gfp) => _preferredZone[node * ZoneModifiers + (int)(gfp & ZoneModifierMask)];

    /// <summary>Pops <paramref name="list"/> of <paramref name="zone"/> while the zone is above its low watermark (rmqueue_pcplist); null otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PageFrame* TakeFromPcpList(ThreadCacheHeader* cache, PcpList* list, ZoneData* zone, ZoneEventCounters* counters, bool otherNode, Gfp gfp, int order)
    {
        if (!ThreadCacheHeader.TryEnter(cache)) return null;
        if (list->Head != list->Tail && zone->FreePages > zone->WatermarkLow)
        {
            PageFrame* page = list->PopHead();
            counters->PgAlloc += 1L << order;
            counters->NumaHit++;
            if (otherNode) counters->NumaOther++;
            ThreadCacheHeader.Exit(cache);
            PrepNewPage(page, order, gfp);
            return page;
        }
        ThreadCacheHeader.Exit(cache);
        return null;
    }

    /// <summary>The zone data of <paramref name="zoneId"/> (for handles that cache it).</summary>
    internal ZoneData* ZoneDataOf(int zoneId) => _zones + zoneId;

    /// <summary><see cref="AllocPages"/> through the calling thread's cache known in advance (<see cref="ThisThreadCache"/>).</summary>
    internal PageFrame* AllocPagesThrough(ThreadCacheHeader* cache, Gfp gfp, int order)
    {
        int node = CurrentNode;
        if (CanUsePcp(node, gfp, order))
        {
            PageFrame* page = AllocFromPcp(cache, PcpLists(cache), Counters(cache), node, node, gfp, order);
            if (page != null) return page;
        }
        return AllocPagesSlow(gfp, order, node, node);
    }

    /// <summary>The calling thread's per-thread lists, created on first use (for handles of other layers that keep it).</summary>
    internal ThreadCacheHeader* ThisThreadCache()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _pcp.GetOrCreateCurrent();
    }

    /// <summary>The slow path of an allocation the per-thread lists did not serve.</summary>
    internal PageFrame* AllocPagesNotFromPcp(int node, Gfp gfp, int order)
    {
        int cpuNode = CurrentNode;
        return AllocPagesSlow(gfp, order, node < 0 ? cpuNode : node, cpuNode);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PrepNewPage(PageFrame* page, int order, Gfp gfp)
    {
        page->FlagsAndZone = (page->FlagsAndZone & ~PageFrame.FlagMask) | (uint)PageFlags.Allocated;
        page->_order = order;
        *(ulong*)&page->_refcount = 1; // RefCount = 1 and MapCount = 0 (adjacent ints) in one store
        page->Private = 0;
        page->Next = page->Prev = null;
        gfp |= _initGfp;
        if ((gfp & (Gfp.Zero | Gfp.Comp)) != 0 || _kasan != null) PrepNewPageSlow(page, order, gfp);
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // out of the plain call's inlined fast path
    private void PrepNewPageSlow(PageFrame* page, int order, Gfp gfp)
    {
        _kasan?.Unpoison(AddressOf(page), (nuint)PageFrame.PageSize << order);
        if (WantInitOnAlloc(gfp)) System.Runtime.InteropServices.NativeMemory.Clear(AddressOf(page), (nuint)PageFrame.PageSize << order);
        if ((gfp & Gfp.Comp) != 0 && order > 0) PrepCompound(page, order);
    }

    /// <summary>Makes a new block of order &gt; 0 a compound page (prep_compound_page): a head, and tails that point at it.</summary>
    private static void PrepCompound(PageFrame* page, int order)
    {
        page->FlagsAndZone |= (uint)PageFlags.Head;
        long n = 1L << order;
        for (long i = 1; i < n; i++)
        {
            PageFrame* tail = page + i;
            tail->FlagsAndZone = (tail->FlagsAndZone & ~PageFrame.FlagMask) | (uint)PageFlags.Tail;
            tail->Private = (nuint)page;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageFrame* AllocPagesSlow(Gfp gfp, int order, int node, int cpuNode)
        => _pageGuards && (uint)order < MaxOrder ? AllocGuarded(gfp, order, node, cpuNode) : AllocPagesSlowCore(gfp, order, node, cpuNode);

    /// <summary>The allocation slow path proper: the free lists against the watermarks, then reclaim, compaction of the per-thread lists, growth and the OOM killer.</summary>
    private PageFrame* AllocPagesSlowCore(Gfp gfp, int order, int node, int cpuNode)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        bool noFail = (gfp & Gfp.NoFail) != 0;
        if (noFail) CheckNoFailRequest(gfp, order);

        if ((uint)order > MaxOrder)
        {
            ReportFailure(gfp, order, FailureCause.OrderAboveMax);
            return null;
        }
        if ((uint)node >= (uint)_nodeCount)
            throw new ArgumentOutOfRangeException(nameof(node), node, $"There are {_nodeCount} nodes.");
        if (FaultInjection.Enabled && FaultInjection.ShouldFail((long)PageFrame.PageSize << order, order, gfp))
        {
            Interlocked.Increment(ref _allocFailuresInjected);
            ReportFailure(gfp, order, FailureCause.Injected);
            return null;
        }

        int highest = (int)gfp.HighestZone();
        bool thisNode = (gfp & Gfp.ThisNode) != 0;

        // First attempt against the low watermark, as the fast path does.
        PageFrame* page = GetPageFromFreelist(gfp, order, AllocFlags.WmarkLow, node, highest, thisNode, cpuNode);
        if (page != null) return page;
        WakeKswapd(gfp, order, node);

        AllocFlags flags = GfpToAllocFlags(gfp);
        // Growing only helps requests that may use the zone hot-added sections join.
        bool mayGrow = (gfp & Gfp.NoRetry) == 0 && _options.AutoGrow && highest >= (int)HotAddedZone;
        bool mayIgnoreWatermarks = (gfp & (Gfp.MemAlloc | Gfp.NoMemAlloc)) == Gfp.MemAlloc
            || NoFailMayIgnoreWatermarks(gfp, order, highest);
        long start = noFail ? Stopwatch.GetTimestamp() : 0;
        long nextStallReport = start + _stallTicks;
        int reclaimRetries = 0, reclaimRounds = 0, oomKills = 0;
        while (true)
        {
            page = GetPageFromFreelist(gfp, order, flags, node, highest, thisNode, cpuNode);
            if (page != null) return page;

            // Pages sitting on per-thread lists may merge into what we need.
            DrainAllPages();
            page = GetPageFromFreelist(gfp, order, flags, node, highest, thisNode, cpuNode);
            if (page != null) return page;

            if (RunShrinkers(gfp, order, node) > 0)
            {
                page = GetPageFromFreelist(gfp, order, flags, node, highest, thisNode, cpuNode);
                if (page != null) return page;
            }

            if (mayGrow && TryGrow(node)) continue;

            // should_reclaim_retry: retry while reclaim makes progress (other threads may take what it freed), and
            // a bounded number of rounds without progress, each after a pause for write-back in flight (the
            // kernel's reclaim throttling), before the OOM killer.
            if (ReclaimEnabled(gfp))
            {
                if (DirectReclaim(gfp, order, node))
                {
                    page = GetPageFromFreelist(gfp, order, flags, node, highest, thisNode, cpuNode);
                    if (page != null) return page;
                    // Progress resets the count (the kernel retries for as long as reclaim makes progress, for
                    // orders up to PAGE_ALLOC_COSTLY_ORDER); others took what it freed, so let them run a moment.
                    reclaimRetries = 0;
                    if (order <= CostlyOrder || ++reclaimRounds <= MaxReclaimRetries)
                    {
                        if ((++reclaimRounds & 15) == 0) Thread.Yield();
                        continue;
                    }
                }
                else if (ShouldRetryReclaim(++reclaimRetries, node, gfp))
                {
                    Thread.Sleep(1);
                    continue;
                }
            }

            // Reclaim has failed: what is left is the reserve below the watermarks, and pages taken from it are
            // marked so that their users know (pfmemalloc).
            if (mayIgnoreWatermarks)
            {
                page = GetPageFromFreelist(gfp, order, AllocFlags.NoWatermarks, node, highest, thisNode, cpuNode);
                if (page != null)
                {
                    page->FlagsAndZone |= (uint)PageFlags.PfMemAlloc;
                    return page;
                }
            }

            // __alloc_pages_may_oom: a victim's memory is worth another round of the loop.
            if (oomKills < MaxReclaimRetries && InvokeOomKiller(gfp, order))
            {
                oomKills++;
                reclaimRetries = 0;
                continue;
            }

            if (!noFail) break;
            // The kernel's last NOFAIL attempt (ALLOC_MIN_RESERVE): half the min reserve, as __GFP_HIGH gets.
            page = GetPageFromFreelist(gfp, order, flags | AllocFlags.MinReserve, node, highest, thisNode, cpuNode);
            if (page != null) return page;
            nextStallReport = ReportStallIfDue(gfp, order, start, nextStallReport);
            WaitForFreedPages();
        }

        ReportFailure(gfp, order, FailureCause.NoMemory);
        return null;
    }

    private static AllocFlags GfpToAllocFlags(Gfp gfp)
    {
        AllocFlags flags = AllocFlags.WmarkMin;
        if ((gfp & Gfp.High) != 0) flags |= AllocFlags.MinReserve;
        if ((gfp & Gfp.DirectReclaim) == 0 && (gfp & Gfp.NoMemAlloc) == 0) flags |= AllocFlags.NonBlock;
        return flags;
    }

    private PageFrame* GetPageFromFreelist(Gfp gfp, int order, AllocFlags flags, int node, int highest, bool thisNode, int cpuNode)
    {
        ZonelistSet set = _zonelists;
        int[] zonelist = set.Lists[node * ZonesPerNode + highest];
        int count = thisNode ? set.LocalCount[node * ZonesPerNode + highest] : zonelist.Length;
        int preferredZoneId = count > 0 ? zonelist[0] : -1;
        for (int i = 0; i < count; i++)
        {
            ZoneData* zone = _zones + zonelist[i];
            if ((flags & AllocFlags.NoWatermarks) == 0)
            {
                long mark = (flags & AllocFlags.WmarkLow) != 0 ? zone->WatermarkLow : zone->WatermarkMin;
                if (!ZoneWatermarkOk(zone, order, mark, flags, highest)) continue;
            }
            PageFrame* page = Rmqueue(zone, order, usePcp: (flags & (AllocFlags.NoWatermarks | AllocFlags.MinReserve)) == 0);
            if (page == null) continue;
            CountAllocation(zone, preferredZoneId, order, node, cpuNode);
            PrepNewPage(page, order, gfp);
            return page;
        }
        return null;
    }

    private PageFrame* Rmqueue(ZoneData* zone, int order, bool usePcp)
    {
        if (usePcp && order <= PcpMaxOrder)
        {
            ThreadCacheHeader* cache = _pcp.GetOrCreateCurrent();
            if (ThreadCacheHeader.TryEnter(cache))
            {
                PcpList* list = PcpLists(cache) + zone->Id * PcpOrders + order;
                if (list->Count == 0) RefillPcpList(zone, list, order);
                PageFrame* fromList = list->Count > 0 ? list->PopHead() : null;
                ThreadCacheHeader.Exit(cache);
                return fromList;
            }
        }
        NativeSpinLock.Acquire(&zone->Lock);
        PageFrame* page = RmqueueSmallest(zone, order);
        NativeSpinLock.Release(&zone->Lock);
        return page;
    }

    /// <summary>Moves a batch from the buddy lists to an empty per-thread list (rmqueue_bulk), lowest address popped first.</summary>
    private void RefillPcpList(ZoneData* zone, PcpList* list, int order)
    {
        int batch = _pcpBatch[order];
        PageFrame** taken = stackalloc PageFrame*[batch];
        int n = 0;
        NativeSpinLock.Acquire(&zone->Lock);
        for (; n < batch; n++)
        {
            PageFrame* page = RmqueueSmallest(zone, order);
            if (page == null) break;
            page->FlagsAndZone |= (uint)PageFlags.Pcp;
            page->_order = order;
            taken[n] = page;
        }
        NativeSpinLock.Release(&zone->Lock);
        // Pushed highest first so that pops hand the batch out in address order.
        while (n > 0) list->PushHead(taken[--n]);
        Interlocked.Increment(ref _pcpRefills);
    }

    private void CountAllocation(ZoneData* zone, int preferredZoneId, int order, int node, int cpuNode)
    {
        ZoneEventCounters* counters = Counters(_pcp.GetOrCreateCurrent());
        ZoneEventCounters* z = counters + zone->Id;
        z->PgAlloc += 1L << order;
        if (preferredZoneId >= 0 && zone->Node != _zones[preferredZoneId].Node)
        {
            z->NumaMiss++;
            counters[preferredZoneId].NumaForeign++;
        }
        else
        {
            z->NumaHit++;
        }
        if (zone->Node != cpuNode) z->NumaOther++; // numa_local is derived: hit + miss - other
        _ = node;
    }
}
