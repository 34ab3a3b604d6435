using System.Globalization;
using System.Text;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Diagnostics;

/// <summary>The inputs of a /proc/meminfo text, in pages unless the name says otherwise.</summary>
internal struct MeminfoValues
{
    /// <summary>
    /// Adds what meminfo takes from a zone beside the totals: its share of totalreserve_pages, its low watermark and,
    /// for a HighMem zone, its pages (the live system and the inspectors read the same zone records).
    /// </summary>
    public void AddZone(in ZoneData zone)
    {
        ReserveHighPages += PageAllocator.TotalReserve(zone);
        LowWatermarkPages += zone.WatermarkLow;
        if (zone.Type != ZoneType.HighMem) return;
        HighTotalPages += zone.ManagedPages;
        HighFreePages += zone.FreePages;
    }

    public long TotalPages;
    public long FreePages;
    public long ReserveHighPages;          // totalreserve_pages: the zones' high watermarks and largest lowmem reserves
    public long SlabReclaimablePages;
    public long SlabUnreclaimablePages;
    public long PageTablePages;
    public long? VmallocPages;             // null when the system has no vmalloc layer
    public long PercpuPages;
    public long LowWatermarkPages;         // sum of the zones' low watermarks (the page cache's share of MemAvailable)
    public MeminfoFileValues? Files;       // null when the system has no page cache
    public bool HighMem;                   // the arena has a low/high split: the HighTotal/HighFree/LowTotal/LowFree lines
    public long HighTotalPages, HighFreePages; // the HighMem zones
    public long ActiveAnon, InactiveAnon, ActiveFile, InactiveFile; // the LRU lists
    public (long Total, long Free, long Cached) Swap;
}

/// <summary>The page-cache inputs of a /proc/meminfo text, in pages.</summary>
internal struct MeminfoFileValues
{
    public long CachedPages;
    public long DirtyPages;
    public long WritebackPages;
    public long MappedPages;
    public long ShmemPages;
}

/// <summary>Builds /proc/meminfo items (rendered by <see cref="Common.MeminfoText"/>); shared by the live system and out-of-process inspectors.</summary>
internal static class MeminfoFormat
{
    private const int KbPerPage = PageFrame.PageSize / 1024;

    public static IReadOnlyList<(string Name, long Kb)> Items(in MeminfoValues v)
    {
        long slab = v.SlabReclaimablePages + v.SlabUnreclaimablePages;
        // MemAvailable as si_mem_available estimates it: free pages above the reserve, the page cache less what
        // reclaim would have to leave (half of it, at most the low watermark), and half the reclaimable slab.
        long cached = v.Files?.CachedPages ?? 0;
        long available = Math.Max(0, v.FreePages - v.ReserveHighPages + cached - Math.Min(cached / 2, v.LowWatermarkPages)
            + v.SlabReclaimablePages / 2);
        var items = new List<(string, long)>
        {
            ("MemTotal", v.TotalPages * KbPerPage),
            ("MemFree", v.FreePages * KbPerPage),
            ("MemAvailable", available * KbPerPage),
        };
        if (v.Files is { } files)
        {
            // Shared anonymous memory is not a page-cache file here, so unlike Linux's, Cached does not include Shmem.
            items.Add(("Buffers", 0));
            items.Add(("Cached", files.CachedPages * KbPerPage));
        }
        items.AddRange(
        [
            ("SwapCached", v.Swap.Cached * KbPerPage),
            ("Active", (v.ActiveAnon + v.ActiveFile) * KbPerPage),
            ("Inactive", (v.InactiveAnon + v.InactiveFile) * KbPerPage),
            ("Active(anon)", v.ActiveAnon * KbPerPage),
            ("Inactive(anon)", v.InactiveAnon * KbPerPage),
            ("Active(file)", v.ActiveFile * KbPerPage),
            ("Inactive(file)", v.InactiveFile * KbPerPage),
        ]);
        AddHighLow(items, v);
        items.Add(("SwapTotal", v.Swap.Total * KbPerPage));
        items.Add(("SwapFree", v.Swap.Free * KbPerPage));
        if (v.Files is { } dirty)
        {
            items.Add(("Dirty", dirty.DirtyPages * KbPerPage));
            items.Add(("Writeback", dirty.WritebackPages * KbPerPage));
            items.Add(("Mapped", dirty.MappedPages * KbPerPage));
            items.Add(("Shmem", dirty.ShmemPages * KbPerPage));
        }
        items.AddRange(
        [
            ("Slab", slab * KbPerPage),
            ("SReclaimable", v.SlabReclaimablePages * KbPerPage),
            ("SUnreclaim", v.SlabUnreclaimablePages * KbPerPage),
            ("PageTables", v.PageTablePages * KbPerPage),
        ]);
        if (v.VmallocPages is { } vmallocPages) items.AddRange(Vmalloc.VmallocAllocator.MeminfoItems(vmallocPages));
        items.Add(("Percpu", v.PercpuPages * KbPerPage));
        return items;
    }

    /// <summary>HighTotal/HighFree/LowTotal/LowFree, as a kernel with CONFIG_HIGHMEM prints them (between Mlocked and SwapTotal).</summary>
    private static void AddHighLow(List<(string, long)> items, in MeminfoValues v)
    {
        if (!v.HighMem) return;
        items.Add(("HighTotal", v.HighTotalPages * KbPerPage));
        items.Add(("HighFree", v.HighFreePages * KbPerPage));
        items.Add(("LowTotal", (v.TotalPages - v.HighTotalPages) * KbPerPage));
        items.Add(("LowFree", (v.FreePages - v.HighFreePages) * KbPerPage));
    }

}
