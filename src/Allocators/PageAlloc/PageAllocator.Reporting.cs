using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private const long MaxOrderPages = 1L << MaxOrder;

    private readonly Lock _reportLock = new();
    private Timer? _reportTimer;
    private int _reportScheduled;

    /// <summary>
    /// Reports now (delay zero) or schedules one report of every zone after <see cref="PageAllocatorOptions.FreePageReportingDelay"/>
    /// on a worker (page_reporting_request: one pending request at a time).
    /// </summary>
    private void RequestFreePageReporting(ZoneData* zone)
    {
        TimeSpan delay = _options.FreePageReportingDelay;
        if (delay <= TimeSpan.Zero)
        {
            ReportFreePages(zone);
            return;
        }
        if (Interlocked.Exchange(ref _reportScheduled, 1) != 0) return;
        lock (_reportLock)
        {
            if (_disposed) return;
            _reportTimer ??= new Timer(static state => ((PageAllocator)state!).ReportFromWorker(), this, Timeout.Infinite, Timeout.Infinite);
            _reportTimer.Change(delay, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>The delayed report (page_reporting_process): every zone that still has blocks to give back.</summary>
    private void ReportFromWorker()
    {
        Volatile.Write(ref _reportScheduled, 0);
        lock (_reportLock)
        {
            if (_disposed) return;
            for (int i = 0; i < _zoneCount; i++)
                if (ShouldReportFreePages(_zones + i)) ReportFreePages(_zones + i);
        }
    }

    /// <summary>Stops the reporting worker; a report in progress finishes first.</summary>
    private void StopReporting()
    {
        lock (_reportLock)
        {
            _reportTimer?.Dispose();
            _reportTimer = null;
        }
    }

    /// <summary>True when the zone holds at least two resident free max-order blocks above its high watermark.</summary>
    private static bool ShouldReportFreePages(ZoneData* zone)
    {
        long residentFree = Volatile.Read(ref zone->FreePages) - Volatile.Read(ref zone->ReportedPages);
        FreeArea* top = ZoneData.Area(zone, MaxOrder);
        return residentFree - zone->WatermarkHigh >= 2 * MaxOrderPages && top->Count > top->Reported;
    }

    /// <summary>
    /// Free page reporting: gives resident free max-order blocks above the high watermark back to the host
    /// (madvise MADV_DONTNEED, or a hole punch for the memfd arena). Blocks are isolated from the free lists while
    /// the host call runs, then put back marked <see cref="PageFlags.Reported"/>; they are usable as before.
    /// </summary>
    /// <returns>Pages given back.</returns>
    public long ReleaseFreeMemory()
    {
        long released = 0;
        for (int i = 0; i < _zoneCount; i++) released += ReportFreePages(_zones + i, keepAboveHigh: 0);
        return released;
    }

    private long ReportFreePages(ZoneData* zone) => ReportFreePages(zone, keepAboveHigh: MaxOrderPages);

    private long ReportFreePages(ZoneData* zone, long keepAboveHigh)
    {
        const int Batch = 16;
        PageFrame** isolated = stackalloc PageFrame*[Batch];
        long total = 0;
        while (true)
        {
            int count = 0;
            NativeSpinLock.Acquire(&zone->Lock);
            long residentFree = zone->FreePages - zone->ReportedPages;
            PageFrame* page = ZoneData.Area(zone, MaxOrder)->Head;
            while (page != null && count < Batch && residentFree - zone->WatermarkHigh - keepAboveHigh >= MaxOrderPages)
            {
                PageFrame* next = page->Next;
                if (!page->Has(PageFlags.Reported))
                {
                    DelFromFreeArea(zone, page, MaxOrder);
                    page->FlagsAndZone |= (uint)PageFlags.Isolated;
                    isolated[count++] = page;
                    residentFree -= MaxOrderPages;
                }
                page = next;
            }
            NativeSpinLock.Release(&zone->Lock);
            if (count == 0) return total;

            bool ok = true;
            for (int i = 0; i < count; i++) ok &= _memory.Discard(isolated[i], MaxOrder);

            NativeSpinLock.Acquire(&zone->Lock);
            for (int i = 0; i < count; i++)
            {
                isolated[i]->FlagsAndZone &= ~(ulong)(uint)PageFlags.Isolated;
                AddToFreeArea(zone, isolated[i], MaxOrder, reported: ok, atTail: true);
            }
            if (ok) zone->PagesReportedTotal += count * MaxOrderPages;
            NativeSpinLock.Release(&zone->Lock);
            if (!ok) return total;
            total += count * MaxOrderPages;
        }
    }
}
