using System.Diagnostics;
using System.Runtime.CompilerServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    // All methods here run under the zone's lock.

    private static void AddToFreeArea(ZoneData* zone, PageFrame* page, int order, bool reported, bool atTail = false)
    {
        NativeSpinLock.AssertHeld(&zone->Lock);
        FreeArea* area = ZoneData.Area(zone, order);
        page->_order = order;
        page->FlagsAndZone = (page->FlagsAndZone & ~PageFrame.FlagMask)
            | (uint)(PageFlags.Buddy | (reported ? PageFlags.Reported : 0));
        if (atTail && area->Tail != null)
        {
            page->Next = null;
            page->Prev = area->Tail;
            area->Tail->Next = page;
            area->Tail = page;
        }
        else
        {
            page->Prev = null;
            page->Next = area->Head;
            if (area->Head != null) area->Head->Prev = page; else area->Tail = page;
            area->Head = page;
        }
        area->Count++;
        zone->FreePages += 1L << order;
        if (reported)
        {
            area->Reported++;
            zone->ReportedPages += 1L << order;
        }
    }

    private static void DelFromFreeArea(ZoneData* zone, PageFrame* page, int order)
    {
        NativeSpinLock.AssertHeld(&zone->Lock);
        FreeArea* area = ZoneData.Area(zone, order);
        if (page->Prev != null) page->Prev->Next = page->Next; else area->Head = page->Next;
        if (page->Next != null) page->Next->Prev = page->Prev; else area->Tail = page->Prev;
        page->Next = page->Prev = null;
        area->Count--;
        zone->FreePages -= 1L << order;
        if (page->Has(PageFlags.Reported))
        {
            area->Reported--;
            zone->ReportedPages -= 1L << order;
        }
        if (order == MaxOrder && page->Has(PageFlags.DeferredInit)) InitDeferredTails(page);
        page->FlagsAndZone &= ~(ulong)(uint)(PageFlags.Buddy | PageFlags.Reported);
        page->_order = 0;
    }

    /// <summary>
    /// Writes the frames of the block that holds <paramref name="page"/>, a frame of this memory, if they are still
    /// deferred: a report about a wild or never-used frame then names its real pfn, zone and state. Not for hot paths.
    /// </summary>
    internal void InitFrame(PageFrame* page)
    {
        ulong pfn = _memory.FramePfn(page);
        PageFrame* head = page - (long)(pfn & (MaxOrderPages - 1));
        if (!head->Has(PageFlags.DeferredInit)) return;
        ZoneData* zone = _zones + head->ZoneId;
        NativeSpinLock.Acquire(&zone->Lock);
        try
        {
            if (head->Has(PageFlags.DeferredInit)) InitDeferredTails(head);
        }
        finally { NativeSpinLock.Release(&zone->Lock); }
    }

    /// <summary>
    /// Writes the tail frames of a max-order block leaving its free list for the first time (deferred_init_pages): each
    /// gets its pfn and the head's zone, as a free block's tails have; the block's memory itself is not touched.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void InitDeferredTails(PageFrame* head)
    {
        ulong zone = head->FlagsAndZone & ~PageFrame.FlagMask;
        uint pfn = head->_pfn;
        for (int i = 1; i < MaxOrderPages; i++)
        {
            head[i]._pfn = pfn + (uint)i;
            head[i].FlagsAndZone = zone;
        }
        head->FlagsAndZone &= ~(ulong)(uint)PageFlags.DeferredInit;
    }

    /// <summary>Takes the smallest free block of at least <paramref name="order"/> and splits it down (__rmqueue_smallest).</summary>
    private static PageFrame* RmqueueSmallest(ZoneData* zone, int order)
    {
        NativeSpinLock.AssertHeld(&zone->Lock);
        for (int current = order; current <= MaxOrder; current++)
        {
            PageFrame* page = ZoneData.Area(zone, current)->Head;
            if (page == null) continue;
            bool reported = page->Has(PageFlags.Reported);
            DelFromFreeArea(zone, page, current);
            if (reported) zone->PagesReusedAfterReport += 1L << order;
            Expand(zone, page, order, current, reported);
            return page;
        }
        return null;
    }

    /// <summary>Gives back the upper halves of a block split from order <paramref name="high"/> down to <paramref name="low"/>.</summary>
    private static void Expand(ZoneData* zone, PageFrame* page, int low, int high, bool reported)
    {
        NativeSpinLock.AssertHeld(&zone->Lock);
        long size = 1L << high;
        while (high > low)
        {
            high--;
            size >>= 1;
            AddToFreeArea(zone, page + size, high, reported);
        }
    }

    /// <summary>Frees a block and merges it with its free buddies as far as possible (__free_one_page).</summary>
    private void FreeOneBlock(ZoneData* zone, PageFrame* page, int order)
    {
        NativeSpinLock.AssertHeld(&zone->Lock);
        ulong pfn = page->Pfn;
        int zoneId = page->ZoneId;
        while (order < MaxOrder)
        {
            ulong buddyPfn = pfn ^ (1UL << order);
            PageFrame* buddy = page + ((long)buddyPfn - (long)pfn);
            if (!IsFreeBuddy(buddy, order, zoneId)) break;
            DelFromFreeArea(zone, buddy, order);
            if (buddyPfn < pfn)
            {
                page = buddy;
                pfn = buddyPfn;
            }
            order++;
        }
        AddToFreeArea(zone, page, order, reported: false, atTail: ShufflePickTail(order));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsFreeBuddy(PageFrame* buddy, int order, int zoneId)
        => buddy->Has(PageFlags.Buddy) && buddy->Order == order && buddy->ZoneId == zoneId;
}
