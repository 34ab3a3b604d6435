using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private long _minFreeKbytes;

    /// <summary>The min_free_kbytes in force (derived from memory size unless configured).</summary>
    public long MinFreeKbytes => _minFreeKbytes;

    /// <summary>
    /// Recomputes min/low/high of every zone like the kernel's __setup_per_zone_wmarks:
    /// min_free_kbytes = clamp(sqrt(lowmem_kbytes * 16), 128, 262144), split across zones by managed pages;
    /// low = min + max(min/4, managed * scale / 10000), high = min + 2 * that.
    /// </summary>
    private void SetupWatermarks()
    {
        long managedTotal = ManagedPages;
        long lowmemKbytes = managedTotal * (PageFrame.PageSize / 1024);
        _minFreeKbytes = _options.MinFreeKbytes ?? Math.Clamp((long)Math.Sqrt(lowmemKbytes * 16.0), 128, 262144);
        long pagesMin = _minFreeKbytes >> (PageFrame.PageShift - 10);
        for (int i = 0; i < _zoneCount; i++)
        {
            ZoneData* zone = _zones + i;
            NativeSpinLock.Acquire(&zone->Lock);
            long managed = zone->ManagedPages;
            long min = managedTotal == 0 ? 0 : pagesMin * managed / managedTotal;
            long tmp = Math.Max(min / 4, managed * _options.WatermarkScaleFactor / 10000);
            zone->WatermarkMin = min;
            zone->WatermarkLow = min + tmp;
            zone->WatermarkHigh = min + 2 * tmp;
            NativeSpinLock.Release(&zone->Lock);
        }
    }

    /// <summary>__zone_watermark_ok: enough free pages above the mark (less the reserve share the flags allow) and a block of the order.</summary>
    private static bool ZoneWatermarkOk(ZoneData* zone, int order, long mark, AllocFlags flags)
    {
        long free = Volatile.Read(ref zone->FreePages) - ((1L << order) - 1);
        long min = mark;
        if ((flags & AllocFlags.MinReserve) != 0)
        {
            min -= min / 2;
            if ((flags & AllocFlags.NonBlock) != 0) min -= min / 4;
        }
        if (free <= min) return false;
        if (order == 0) return true;
        for (int o = order; o <= MaxOrder; o++)
        {
            if (Volatile.Read(ref ZoneData.Area(zone, o)->Count) > 0) return true;
        }
        return false;
    }
}
