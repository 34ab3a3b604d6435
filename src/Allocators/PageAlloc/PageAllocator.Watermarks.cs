using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private long _minFreeKbytes;

    /// <summary>The min_free_kbytes in force (derived from memory size unless configured).</summary>
    public long MinFreeKbytes => _minFreeKbytes;

    /// <summary>
    /// sysctl_lowmem_reserve_ratio by zone type (DMA, DMA32, Normal, HighMem): a zone keeps 1/ratio of the managed
    /// pages of the zones above it in its node from allocations that could have used those zones.
    /// </summary>
    private static ReadOnlySpan<int> LowmemReserveRatio => [256, 256, 32, 0];

    /// <summary>
    /// Recomputes min/low/high of every zone like the kernel's __setup_per_zone_wmarks:
    /// min_free_kbytes = clamp(sqrt(lowmem_kbytes * 16), 128, 262144), split across the low zones by managed pages
    /// (a HighMem zone's min is managed/1024, clamped to 32..128 pages: the kernel hardly needs high memory free);
    /// low = min + max(share/4, managed * scale / 10000), high = min + 2 * that, where share is the zone's part of
    /// min_free_kbytes by managed pages (for a HighMem zone too). Then the lowmem reserves
    /// (setup_per_zone_lowmem_reserve): zone z keeps ManagedPages(z+1..j) / ratio[z] pages from an allocation whose
    /// highest zone is j.
    /// </summary>
    private void SetupWatermarks()
    {
        long lowmemTotal = 0;
        for (int i = 0; i < _zoneCount; i++)
        {
            if (_zones[i].Type != ZoneType.HighMem) lowmemTotal += _zones[i].ManagedPages;
        }
        long lowmemKbytes = lowmemTotal * (PageFrame.PageSize / 1024);
        _minFreeKbytes = _options.MinFreeKbytes ?? Math.Clamp((long)Math.Sqrt(lowmemKbytes * 16.0), 128, 262144);
        long pagesMin = _minFreeKbytes >> (PageFrame.PageShift - 10);
        for (int i = 0; i < _zoneCount; i++)
        {
            ZoneData* zone = _zones + i;
            NativeSpinLock.Acquire(&zone->Lock);
            long managed = zone->ManagedPages;
            // The zone's share of min_free_kbytes; a HighMem zone's min is clamped, its gaps are not.
            long share = lowmemTotal == 0 ? 0 : pagesMin * managed / lowmemTotal;
            long min = managed == 0 ? 0 : zone->Type == ZoneType.HighMem ? Math.Clamp(managed / 1024, 32, 128) : share;
            long tmp = Math.Max(share / 4, managed * _options.WatermarkScaleFactor / 10000);
            zone->WatermarkMin = min;
            zone->WatermarkLow = min + tmp;
            zone->WatermarkHigh = min + 2 * tmp;
            long above = 0;
            for (int j = 0; j < ZonesPerNode; j++)
            {
                if (j > (int)zone->Type) above += _zones[zone->Node * ZonesPerNode + j].ManagedPages;
                int ratio = LowmemReserveRatio[(int)zone->Type];
                zone->LowmemReserve[j] = j <= (int)zone->Type || ratio == 0 || managed == 0 ? 0 : above / ratio;
            }
            NativeSpinLock.Release(&zone->Lock);
        }
    }

    /// <summary>
    /// totalreserve_pages' share of a zone: its high watermark plus its largest lowmem reserve, at most what it
    /// manages (calculate_totalreserve_pages; MemAvailable leaves these out).
    /// </summary>
    internal static long TotalReserve(in ZoneData zone)
    {
        long max = 0;
        for (int j = 0; j < ZonesPerNode; j++) max = Math.Max(max, zone.LowmemReserve[j]);
        return Math.Min(max + zone.WatermarkHigh, zone.ManagedPages);
    }

    /// <summary>
    /// __zone_watermark_ok: enough free pages above the mark (less the reserve share the flags allow) plus the zone's
    /// lowmem reserve against <paramref name="highestZone"/>, and a block of the order.
    /// </summary>
    private static bool ZoneWatermarkOk(ZoneData* zone, int order, long mark, AllocFlags flags, int highestZone)
    {
        long free = Volatile.Read(ref zone->FreePages) - ((1L << order) - 1);
        long min = mark;
        if ((flags & AllocFlags.MinReserve) != 0)
        {
            min -= min / 2;
            if ((flags & AllocFlags.NonBlock) != 0) min -= min / 4;
        }
        if (free <= min + zone->LowmemReserve[highestZone]) return false;
        if (order == 0) return true;
        for (int o = order; o <= MaxOrder; o++)
        {
            if (Volatile.Read(ref ZoneData.Area(zone, o)->Count) > 0) return true;
        }
        return false;
    }
}
