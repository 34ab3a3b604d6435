using System.Runtime.CompilerServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

/// <summary>
/// The calling thread's per-thread page lists, resolved once: <see cref="AllocPages"/> and <see cref="FreePages"/> are
/// <see cref="PageAllocator.AllocPages"/> and <see cref="PageAllocator.FreePages(PageFrame*, int)"/> without the
/// per-call thread-local lookup, with the same validation and the same fallbacks (orders above 3, node-bound or
/// reserve requests, fault injection and low watermarks go the general way).
/// </summary>
/// <remarks>
/// A <c>ref struct</c>: it stays on the stack of the thread that took it (no fields, lambdas or awaits), so only that
/// thread uses it. Take it with <see cref="PageAllocator.ThisThread"/> before a run of page operations; it must not be
/// used after the allocator is disposed. Drains from other threads stay safe: every operation enters the thread's
/// lists exactly as the plain calls do.
/// </remarks>
public readonly unsafe ref struct PageAllocatorThread
{
    private readonly PageAllocator _pages;
    private readonly ThreadCacheHeader* _cache;
    private readonly PcpList* _lists;
    private readonly ZoneEventCounters* _counters;
    private readonly int _zoneId;                 // single node: the preferred zone of plain requests, else -1
    private readonly PcpList* _zoneLists;         // its four lists
    private readonly ZoneData* _zone;
    private readonly ZoneEventCounters* _zoneCounters;
    private readonly byte* _memMap;               // flat model: the frame array, so a free validates without a lookup
    private readonly nuint _memMapBytes;

    internal PageAllocatorThread(PageAllocator pages, ThreadCacheHeader* cache, PcpList* lists, ZoneEventCounters* counters, int zoneId)
    {
        _pages = pages;
        _cache = cache;
        _lists = lists;
        _counters = counters;
        _zoneId = zoneId;
        (nint memMap, nuint bytes) = pages.Memory.FlatMemMap;
        _memMap = (byte*)memMap;
        _memMapBytes = bytes;
        if (zoneId >= 0)
        {
            _zoneLists = lists + zoneId * PageAllocator.PcpOrders;
            _zone = pages.ZoneDataOf(zoneId);
            _zoneCounters = counters + zoneId;
        }
    }

    /// <summary>Allocates 2^<paramref name="order"/> pages on the current node (alloc_pages); null on failure.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* AllocPages(Gfp gfp, int order)
    {
        PageAllocator pages = _pages;
        int zoneId = _zoneId;
        if (zoneId >= 0)
        {
            // Single node: a plain request's zone is known unless a hot-add changed the zonelist since the handle was taken.
            if (pages.CanUsePcpOnNode0(gfp, order))
            {
                // The cached lists are the Normal zone's: a HighMem request takes them only without the split.
                PageFrame* page = (gfp & (Gfp.Dma | Gfp.Dma32)) == 0 && ((gfp & Gfp.HighMem) == 0 || !pages.HasHighMem)
                    && pages.PreferredZone(0, 0) == zoneId
                    ? pages.TakeFromPcpList(_cache, _zoneLists + order, _zone, _zoneCounters, otherNode: false, gfp, order)
                    : pages.AllocFromPcp(_cache, _lists, _counters, 0, 0, gfp, order);
                if (page != null) return page;
            }
            return pages.AllocPagesNotFromPcp(0, gfp, order);
        }
        int node = pages.CurrentNode;
        if (pages.CanUsePcp(node, gfp, order))
        {
            PageFrame* page = pages.AllocFromPcp(_cache, _lists, _counters, node, node, gfp, order);
            if (page != null) return page;
        }
        return pages.AllocPagesNotFromPcp(node, gfp, order);
    }

    /// <summary>Frees a block from <see cref="AllocPages"/> (__free_pages); misuse throws as <see cref="PageAllocator.FreePages(PageFrame*, int)"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreePages(PageFrame* page, int order)
    {
        if (_memMap == null)
        {
            _pages.FreePagesThrough(_cache, _lists, _counters, page, order);
            return;
        }
        if ((uint)order <= PageAllocator.PcpMaxOrder && PhysicalMemory.IsFrameOf(_memMap, _memMapBytes, page))
            _pages.FreeValidFrameThrough(_cache, _lists, _counters, page, order);
        else
            _pages.FreePages(page, order); // validates, then the general path (or the exception naming the page)
    }
}
