using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>
    /// Checks the buddy invariants stated at the top of <see cref="PageAllocator"/>, zone by zone under the zone lock
    /// (tests run it after workloads; it walks every free list and every frame of the zone, so it is not for hot code).
    /// Throws <see cref="InvalidOperationException"/> naming the zone, order and frame that break one.
    /// </summary>
    internal void CheckConsistency()
    {
        for (int z = 0; z < _zoneCount; z++)
        {
            ZoneData* zone = _zones + z;
            NativeSpinLock.Acquire(&zone->Lock);
            try { CheckZone(zone); }
            finally { NativeSpinLock.Release(&zone->Lock); }
        }
    }

    private void CheckZone(ZoneData* zone)
    {
        string where = $"zone {zone->Node}/{zone->Type.KernelName()}";
        long freePages = 0, reportedPages = 0, listed = 0;
        for (int o = 0; o <= MaxOrder; o++)
        {
            FreeArea* area = ZoneData.Area(zone, o);
            long count = 0, reported = 0;
            PageFrame* prev = null;
            for (PageFrame* p = area->Head; p != null; prev = p, p = p->Next)
            {
                if (++count > area->Count) throw new InvalidOperationException($"{where} order {o}: the list is longer than its count {area->Count}.");
                if (p->Prev != prev) throw new InvalidOperationException($"{where} order {o}: {p->Describe()} has a wrong back link.");
                if (!p->Has(PageFlags.Buddy) || p->Order != o || p->ZoneId != zone->Id)
                    throw new InvalidOperationException($"{where} order {o}: {p->Describe()} is listed but not a free block of this order and zone.");
                if ((p->Pfn & ((1u << o) - 1)) != 0) throw new InvalidOperationException($"{where} order {o}: {p->Describe()} is not aligned to its order.");
                if (o < MaxOrder)
                {
                    PageFrame* buddy = _memory.PfnToPage(p->Pfn ^ (1u << o));
                    if (buddy != null && IsFreeBuddy(buddy, o, zone->Id))
                        throw new InvalidOperationException($"{where} order {o}: {p->Describe()} and its buddy are both free and not merged.");
                }
                if (p->Has(PageFlags.Reported)) reported++;
            }
            if (prev != area->Tail || count != area->Count)
                throw new InvalidOperationException($"{where} order {o}: {count} blocks listed, count {area->Count}, tail {(prev == area->Tail ? "ok" : "wrong")}.");
            if (reported != area->Reported) throw new InvalidOperationException($"{where} order {o}: {reported} reported blocks listed, count {area->Reported}.");
            freePages += count << o;
            reportedPages += reported << o;
            listed += count;
        }
        if (freePages != zone->FreePages) throw new InvalidOperationException($"{where}: free lists hold {freePages} pages, FreePages is {zone->FreePages}.");
        if (reportedPages != zone->ReportedPages) throw new InvalidOperationException($"{where}: free lists hold {reportedPages} reported pages, ReportedPages is {zone->ReportedPages}.");

        // Every frame marked as a free block's head is on a list: nothing is free and unreachable.
        long heads = 0;
        for (long pfn = zone->StartPfn; pfn < zone->EndPfn; pfn++)
        {
            PageFrame* page = _memory.PfnToPage((ulong)pfn);
            if (page != null && page->ZoneId == zone->Id && page->Has(PageFlags.Buddy)) heads++;
        }
        if (heads != listed) throw new InvalidOperationException($"{where}: {heads} frames are marked free block heads, {listed} are listed.");
    }
}
