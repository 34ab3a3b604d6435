using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Allocators.Common;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>Flags of pages reclaim may be holding: they never take the single-reference shortcut on free.</summary>
    private const PageFlags ReclaimablePage = PageFlags.Lru | PageFlags.Anon | PageFlags.SwapBacked | PageFlags.SwapCache
        | PageFlags.Uptodate | PageFlags.Locked | PageFlags.Active | PageFlags.Referenced;

    private const PageFlags FreeCheckMask = PageFlags.Allocated | PageFlags.Buddy | PageFlags.Pcp | PageFlags.Tail
        | PageFlags.Offline | PageFlags.Slab | PageFlags.PageTable | PageFlags.Guard;

    /// <summary>
    /// Drops a reference to a block of 2^<paramref name="order"/> pages and frees it when it was the last (__free_pages).
    /// Throws <see cref="BadPageException"/> (changing nothing) when the page is not a live allocation of that order.
    /// </summary>
    /// <remarks>
    /// The plain call is the fast path: through the calling thread's lists exactly as a handle's free
    /// (<see cref="FreePagesThrough"/>); a thread without lists yet takes the general path.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreePages(PageFrame* page, int order)
    {
        ThreadCacheHeader* cache = _pcp.Current;
        if (cache != null) FreePagesThrough(cache, PcpLists(cache), Counters(cache), page, order);
        else FreePages(page, order, null);
    }

    /// <summary>
    /// <see cref="FreePages(PageFrame*, int)"/> with the calling thread's per-thread lists known in advance
    /// (<paramref name="cache"/>, from <see cref="ThisThreadCache"/>), or looked up when null.
    /// </summary>
    internal void FreePages(PageFrame* page, int order, ThreadCacheHeader* cache)
    {
        if (page == null) throw new ArgumentNullException(nameof(page));
        if (!_memory.IsValidFrame(page)) ThrowBadFree(page, order, "free_pages");
        FreeKnownFrame(page, order, cache);
    }

    /// <summary>The rest of <see cref="FreePages(PageFrame*, int, ThreadCacheHeader*)"/> for a frame known to belong to the arena.</summary>
    private void FreeKnownFrame(PageFrame* page, int order, ThreadCacheHeader* cache = null)
    {
        if ((page->FlagsAndZone & (uint)FreeCheckMask) != (uint)PageFlags.Allocated || page->Order != order)
            ThrowBadFree(page, order, "free_pages");
        int refs = page->RefCount;
        // A page reclaim may hold (on an LRU list, isolated from one, in the swap cache or the page cache) can gain or
        // lose a reference at any moment: only the atomic decrement may decide that this reference was the last.
        if (refs == 1 && (page->FlagsAndZone & (uint)ReclaimablePage) == 0)
        {
            // The last reference: a compound block's tails are checked and cleared in one pass (ReleaseCompound).
            if (page->Has(PageFlags.Head)) ReleaseCompound(page, order);
        }
        else
        {
            if (page->Has(PageFlags.Head)) ValidateCompound(page, order);
            if (refs <= 0) ThrowBadFree(page, order, "free_pages");
            if (Interlocked.Decrement(ref page->_refcount) != 0) return;
            if ((page->FlagsAndZone & (uint)PageFlags.Lru) != 0) _lru.DeleteOnFree(page, NodeOf(page));
        }
        page->_refcount = 0;
        FreePagesPrepared(page, order, cache);
    }

    /// <summary>Frees the block that starts at <paramref name="address"/> (free_pages with an address).</summary>
    public void FreePages(void* address, int order)
    {
        if (address == null) return;
        PageFrame* page = _memory.VirtToPage(address);
        if (page == null)
            throw ReportMisuse(new MemoryCorruptionException($"free_pages: address 0x{(nuint)address:x} is not in the arena.", (nuint)address));
        if (((nuint)address & (PageFrame.PageSize - 1)) != 0)
        {
            InitFrame(page);
            throw ReportMisuse(new BadPageException($"free_pages: address 0x{(nuint)address:x} is not page aligned (interior pointer).",
                page->Pfn, page->Describe(), (nuint)address));
        }
        FreeKnownFrame(page, order); // virt_to_page only returns genuine frames
    }

    /// <summary>Returns a block whose last reference is gone; its state was validated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreePagesPrepared(PageFrame* page, int order, ThreadCacheHeader* cache)
    {
        if (page->Has(PageFlags.Head)) ClearCompound(page, order);
        if (_freeHooks && (order = FreeHooks(page, order)) < 0) return; // in KASAN's quarantine
        if (order <= PcpMaxOrder)
        {
            if (cache == null) cache = _pcp.Current;
            if (cache != null && FreeToPcp(cache, PcpLists(cache), Counters(cache), page, order)) return;
        }
        FreeToZone(page, order);
    }

    /// <summary>Puts a validated, non-compound block of order 0..3 on the thread's list; false when a drainer holds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FreeToPcp(ThreadCacheHeader* cache, PcpList* lists, ZoneEventCounters* counters, PageFrame* page, int order)
        => FreeToPcp(cache, lists, counters, page, page->FlagsAndZone, order);

    /// <summary><see cref="FreeToPcp(ThreadCacheHeader*, PcpList*, ZoneEventCounters*, PageFrame*, int)"/> with the frame's flags word already read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FreeToPcp(ThreadCacheHeader* cache, PcpList* lists, ZoneEventCounters* counters, PageFrame* page, ulong flags, int order)
    {
        int zoneId = (int)((flags >> PageFrame.ZoneShift) & 0xFF);
        ulong pcpFlags = (flags & ~PageFrame.FlagMask) | (uint)PageFlags.Pcp;
        if (!ThreadCacheHeader.TryEnter(cache)) return false;
        page->FlagsAndZone = pcpFlags;
        PcpList* list = lists + zoneId * PcpOrders + order;
        list->PushHead(page);
        (counters + zoneId)->PgFree += 1L << order;
        if (list->Count > list->High) FlushPcpBatch(list, _zones + zoneId, order, list->Batch);
        ThreadCacheHeader.Exit(cache);
        return true;
    }

    /// <summary>
    /// <see cref="FreePages(PageFrame*, int)"/> through a thread's cache known in advance: the same validation, then the
    /// thread's list for a plain single-reference block of order 0..3, else the general path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreePagesThrough(ThreadCacheHeader* cache, PcpList* lists, ZoneEventCounters* counters, PageFrame* page, int order)
    {
        if ((uint)order <= PcpMaxOrder && _memory.IsValidFrame(page)) FreeValidFrameThrough(cache, lists, counters, page, order);
        else FreePages(page, order, cache); // validates, then the general path (or the exception naming the page)
    }

    /// <summary>As above for a genuine frame of the arena and an order of 0..3 (the caller checked both).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeValidFrameThrough(ThreadCacheHeader* cache, PcpList* lists, ZoneEventCounters* counters, PageFrame* page, int order)
    {
        ulong flags = page->FlagsAndZone;
        // One reference, not mapped, and not a page reclaim or a page-cache lookup may take a reference to meanwhile
        // (those go the general way, where only the atomic decrement decides which reference was the last).
        if ((flags & (uint)(FreeCheckMask | PageFlags.Head | ReclaimablePage)) == (uint)PageFlags.Allocated
            && page->Order == order && *(ulong*)&page->_refcount == 1)
        {
            if (_freeHooks)
            {
                // KASAN's blocks wait in its quarantine, a guarded one whole (order + 1): the general path.
                if (_kasan != null)
                {
                    FreeKnownFrame(page, order, cache);
                    return;
                }
                FreeHooks(page, order); // init_on_free alone: the order stays
            }
            page->_refcount = 0;
            if (FreeToPcp(cache, lists, counters, page, flags, order)) return;
            page->_refcount = 1;
        }
        FreeKnownFrame(page, order, cache); // compound, shared or misused: the general path, through this thread's lists
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeToZone(PageFrame* page, int order)
    {
        // A disposed allocator's threads find no lists, so every free after the dispose comes here.
        ObjectDisposedException.ThrowIf(_disposed, this);
        ZoneData* zone = _zones + page->ZoneId;
        (Counters(_pcp.GetOrCreateCurrent()) + zone->Id)->PgFree += 1L << order;
        page->FlagsAndZone &= ~(ulong)(uint)(PageFlags.Allocated | PageFlags.PfMemAlloc);
        NativeSpinLock.Acquire(&zone->Lock);
        FreeOneBlock(zone, page, order);
        NativeSpinLock.Release(&zone->Lock);
        AfterZoneFree(zone);
    }

    /// <summary>Gives the oldest <paramref name="count"/> pages of a per-thread list back to the zone (free_pcppages_bulk).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FlushPcpBatch(PcpList* list, ZoneData* zone, int order, int count)
    {
        if (list->Count == 0) return;
        NativeSpinLock.Acquire(&zone->Lock);
        for (int i = 0; i < count && list->Count > 0; i++)
        {
            PageFrame* page = list->PopTail();
            page->FlagsAndZone &= ~(ulong)(uint)PageFlags.Pcp;
            FreeOneBlock(zone, page, order);
        }
        NativeSpinLock.Release(&zone->Lock);
        Interlocked.Increment(ref _pcpFlushes);
        AfterZoneFree(zone);
    }

    private void AfterZoneFree(ZoneData* zone)
    {
        if (Volatile.Read(ref _noFailWaiters) != 0)
        {
            lock (_freeSignal) Monitor.PulseAll(_freeSignal);
        }
        if (_options.ReleaseFreeMemory && ShouldReportFreePages(zone)) RequestFreePageReporting(zone);
    }

    private void ValidateCompound(PageFrame* head, int order)
    {
        long n = 1L << order;
        for (long i = 1; i < n; i++)
        {
            PageFrame* tail = head + i;
            if (!tail->Has(PageFlags.Tail) || tail->Private != (nuint)head) ThrowCorruptedTail(head, tail);
        }
    }

    /// <summary>
    /// <see cref="ValidateCompound"/> and <see cref="ClearCompound"/> in one pass over the tails; a corrupted tail puts
    /// back the ones already cleared before it throws, so a refused free changes nothing.
    /// </summary>
    private void ReleaseCompound(PageFrame* head, int order)
    {
        long n = 1L << order;
        for (long i = 1; i < n; i++)
        {
            PageFrame* tail = head + i;
            if (!tail->Has(PageFlags.Tail) || tail->Private != (nuint)head)
            {
                for (long j = 1; j < i; j++)
                {
                    head[j].FlagsAndZone |= (uint)PageFlags.Tail;
                    head[j].Private = (nuint)head;
                }
                ThrowCorruptedTail(head, tail);
            }
            tail->FlagsAndZone &= ~(ulong)(uint)PageFlags.Tail;
            tail->Private = 0;
        }
        head->FlagsAndZone &= ~(ulong)(uint)PageFlags.Head;
    }

    [DoesNotReturn]
    private void ThrowCorruptedTail(PageFrame* head, PageFrame* tail)
        => throw ReportMisuse(new BadPageException($"free_pages: compound page pfn 0x{head->Pfn:x} has a corrupted tail at pfn 0x{tail->Pfn:x}.",
            tail->Pfn, tail->Describe()));

    private static void ClearCompound(PageFrame* head, int order)
    {
        long n = 1L << order;
        for (long i = 1; i < n; i++)
        {
            PageFrame* tail = head + i;
            tail->FlagsAndZone &= ~(ulong)(uint)PageFlags.Tail;
            tail->Private = 0;
        }
        head->FlagsAndZone &= ~(ulong)(uint)PageFlags.Head;
    }

    /// <summary>Throws <see cref="MemoryCorruptionException"/> naming <paramref name="page"/> unless it is a frame of this allocator's memory; reads nothing at it.</summary>
    internal void ThrowIfNotFrame(PageFrame* page, string operation)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (page == null) throw new ArgumentNullException(nameof(page), $"{operation}: null page frame.");
        if (!_memory.IsValidFrame(page))
            throw ReportMisuse(new MemoryCorruptionException($"{operation}: 0x{(nuint)page:x} is not a page frame of this allocator.", (nuint)page));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    [DoesNotReturn]
    private void ThrowBadFree(PageFrame* page, int order, string operation)
    {
        ThrowIfNotFrame(page, operation);
        InitFrame(page);
        PageFlags flags = page->Flags;
        string state = page->Describe();
        string reason =
            (order < 0 || order > MaxOrder) ? $"order {order} is outside 0..{MaxOrder}" :
            (flags & PageFlags.Buddy) != 0 ? "double free: the page is already free in the buddy lists" :
            (flags & PageFlags.Pcp) != 0 ? "double free: the page is already free on a per-CPU page list" :
            (flags & PageFlags.Tail) != 0 ? "the page is a tail page of a compound page; free its head" :
            (flags & PageFlags.Offline) != 0 ? "the page is offline" :
            (flags & PageFlags.Slab) != 0 ? "the page belongs to the slab allocator" :
            (flags & PageFlags.PageTable) != 0 ? "the page is a page-table page" :
            (flags & PageFlags.Allocated) == 0 && _kasan != null && _kasan.Quarantine.Contains(page)
                ? "double free: the block is already free, waiting in KASAN's quarantine" :
            (flags & PageFlags.Allocated) == 0 ? "the page is not the start of an allocation (never allocated, or an interior page)" :
            page->Order != order ? $"freed with order {order} but allocated with order {page->Order}" :
            page->RefCount <= 0 ? $"bad refcount {page->RefCount}" :
            "bad page state";
        throw ReportMisuse(new BadPageException($"BUG: Bad page state in {operation}: pfn 0x{page->Pfn:x}: {reason}.", page->Pfn, state, (nuint)AddressOf(page)));
    }
}
