using System.Globalization;
using System.Text;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>Allocations that failed (pgalloc_fail).</summary>
    public long AllocFailures => Interlocked.Read(ref _allocFailures);

    /// <summary>Failures injected by <see cref="FaultInjection"/>.</summary>
    public long InjectedFailures => Interlocked.Read(ref _allocFailuresInjected);

    /// <summary>Warnings given to <see cref="PageAllocatorOptions.Warn"/>: failures without <see cref="Gfp.NoWarn"/>, stall reports, NoFail misuse.</summary>
    public long Warnings => Interlocked.Read(ref _warnings);

    /// <summary>Pages allocated (sum of pgalloc_* over zones).</summary>
    public long PagesAllocated => SumZoneEvent(ZoneEvent.PgAlloc);

    /// <summary>Pages freed (pgfree).</summary>
    public long PagesFreed => SumZoneEvent(ZoneEvent.PgFree);

    /// <summary>Pages given back to the host by free page reporting, in total.</summary>
    public long PagesReleasedToHost
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _zoneCount; i++) sum += Volatile.Read(ref _zones[i].PagesReportedTotal);
            return sum;
        }
    }

    /// <summary>Free pages currently given back to the host (not resident).</summary>
    public long ReportedPages
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _zoneCount; i++) sum += Volatile.Read(ref _zones[i].ReportedPages);
            return sum;
        }
    }

    /// <summary>Free blocks per order for every populated zone, exactly as /proc/buddyinfo prints them.</summary>
    public string BuddyInfo()
    {
        var sb = new StringBuilder();
        for (int z = 0; z < _zoneCount; z++)
        {
            BuddyInfoFormat.AppendZone(sb, _zones[z]);
        }
        return sb.ToString();
    }

    /// <summary>Per-zone details in the layout of /proc/zoneinfo (the items this allocator models).</summary>
    public string ZoneInfo()
    {
        var sb = new StringBuilder();
        var pcpCounts = new long[_zoneCount];
        _pcp.ForEach(p =>
        {
            PcpList* lists = PcpLists((ThreadCacheHeader*)p);
            for (int i = 0; i < _zoneCount * PcpOrders; i++) pcpCounts[i / PcpOrders] += (long)lists[i].Count << (i % PcpOrders);
        });
        for (int z = 0; z < _zoneCount; z++)
        {
            ZoneData* zone = _zones + z;
            if (zone->Type == ZoneType.HighMem && !HasHighMem) continue; // CONFIG_HIGHMEM=n: the zone does not exist
            sb.Append(CultureInfo.InvariantCulture, $"Node {zone->Node}, zone {zone->Type.KernelName(),8}\n");
            sb.Append(CultureInfo.InvariantCulture, $"  pages free     {zone->FreePages}\n");
            sb.Append("        boost    0\n");
            sb.Append(CultureInfo.InvariantCulture, $"        min      {zone->WatermarkMin}\n");
            sb.Append(CultureInfo.InvariantCulture, $"        low      {zone->WatermarkLow}\n");
            sb.Append(CultureInfo.InvariantCulture, $"        high     {zone->WatermarkHigh}\n");
            sb.Append(CultureInfo.InvariantCulture, $"        spanned  {zone->SpannedPages}\n");
            sb.Append(CultureInfo.InvariantCulture, $"        present  {zone->PresentPages}\n");
            sb.Append(CultureInfo.InvariantCulture, $"        managed  {zone->ManagedPages}\n");
            sb.Append("        cma      0\n");
            sb.Append(CultureInfo.InvariantCulture, $"        protection: ({zone->LowmemReserve[0]}");
            for (int j = 1; j < (HasHighMem ? ZonesPerNode : (int)ZoneType.HighMem); j++) sb.Append(CultureInfo.InvariantCulture, $", {zone->LowmemReserve[j]}");
            sb.Append(")\n");
            sb.Append(CultureInfo.InvariantCulture, $"      nr_free_pages {zone->FreePages}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      nr_free_reported {zone->ReportedPages}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      pgalloc  {SumZoneEvent(z, ZoneEvent.PgAlloc)}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      numa_hit {SumZoneEvent(z, ZoneEvent.NumaHit)}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      numa_miss {SumZoneEvent(z, ZoneEvent.NumaMiss)}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      numa_foreign {SumZoneEvent(z, ZoneEvent.NumaForeign)}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      numa_local {SumZoneEvent(z, ZoneEvent.NumaLocal)}\n");
            sb.Append(CultureInfo.InvariantCulture, $"      numa_other {SumZoneEvent(z, ZoneEvent.NumaOther)}\n");
            sb.Append("  pagesets\n");
            sb.Append(CultureInfo.InvariantCulture, $"    threads: {_pcp.Count}\n");
            sb.Append(CultureInfo.InvariantCulture, $"              count: {pcpCounts[z]}\n");
            sb.Append(CultureInfo.InvariantCulture, $"              high:  {_pcpHigh[0]}\n");
            sb.Append(CultureInfo.InvariantCulture, $"              batch: {_pcpBatch[0]}\n");
            sb.Append(CultureInfo.InvariantCulture, $"  start_pfn:           {(zone->Populated ? zone->StartPfn : 0)}\n");
        }
        return sb.ToString();
    }

    /// <summary>Event counters as /proc/vmstat prints them (<c>name value</c> lines).</summary>
    public string VmStat() => Common.VmstatText.Format(VmStatItems());

    /// <summary>The vmstat items as (name, value) pairs.</summary>
    public IReadOnlyList<(string Name, long Value)> VmStatItems()
    {
        var items = new List<(string, long)>
        {
            ("nr_free_pages", NrFreePages),
            ("nr_free_pcp", PcpPages),
            ("nr_free_reported", ReportedPages),
            ("nr_page_table_pages", NrPageTablePages),
        };
        for (int t = 0; t < ZonesPerNode; t++)
        {
            if ((ZoneType)t == ZoneType.HighMem && !HasHighMem) continue;
            long sum = 0;
            for (int n = 0; n < _nodeCount; n++) sum += SumZoneEvent(n * ZonesPerNode + t, ZoneEvent.PgAlloc);
            // vmstat_text's zone suffixes: dma, dma32, normal, high (TEXT_FOR_HIGHMEM).
            items.Add(("pgalloc_" + ((ZoneType)t == ZoneType.HighMem ? "high" : ((ZoneType)t).KernelName().ToLowerInvariant()), sum));
        }
        items.Add(("pgfree", SumZoneEvent(ZoneEvent.PgFree)));
        items.Add(("allocstall_normal", Volatile.Read(ref _allocStallNormal)));
        items.Add(("allocstall_movable", Volatile.Read(ref _allocStallMovable)));
        items.Add(("pgalloc_fail", AllocFailures));
        items.Add(("pgalloc_fail_injected", InjectedFailures));
        items.Add(("numa_hit", SumZoneEvent(ZoneEvent.NumaHit)));
        items.Add(("numa_miss", SumZoneEvent(ZoneEvent.NumaMiss)));
        items.Add(("numa_foreign", SumZoneEvent(ZoneEvent.NumaForeign)));
        items.Add(("numa_interleave", 0L));
        items.Add(("numa_local", SumZoneEvent(ZoneEvent.NumaLocal)));
        items.Add(("numa_other", SumZoneEvent(ZoneEvent.NumaOther)));
        items.Add(("pcp_refill", Interlocked.Read(ref _pcpRefills)));
        items.Add(("pcp_flush", Interlocked.Read(ref _pcpFlushes)));
        items.Add(("pcp_drain_all", Interlocked.Read(ref _pcpDrains)));
        items.Add(("pages_released_to_host", PagesReleasedToHost));
        items.Add(("memory_hotadd", SectionsAdded));
        items.Add(("memory_hotremove", SectionsRemoved));
        return items;
    }

    /// <summary>One node's counters as /sys/devices/system/node/nodeN/numastat prints them.</summary>
    public string NumaStat(int node)
    {
        long Sum(ZoneEvent ev)
        {
            long s = 0;
            for (int t = 0; t < ZonesPerNode; t++) s += SumZoneEvent(node * ZonesPerNode + t, ev);
            return s;
        }
        return $"numa_hit {Sum(ZoneEvent.NumaHit)}\nnuma_miss {Sum(ZoneEvent.NumaMiss)}\nnuma_foreign {Sum(ZoneEvent.NumaForeign)}\n"
            + $"interleave_hit 0\nlocal_node {Sum(ZoneEvent.NumaLocal)}\nother_node {Sum(ZoneEvent.NumaOther)}\n";
    }

    /// <summary>Free block counts [zone id][order] for comparing states in tests and tools.</summary>
    public long[,] FreeBlockCounts()
    {
        var result = new long[_zoneCount, MaxOrder + 1];
        for (int z = 0; z < _zoneCount; z++)
            for (int o = 0; o <= MaxOrder; o++)
                result[z, o] = Volatile.Read(ref ZoneData.Area(_zones + z, o)->Count);
        return result;
    }
}
