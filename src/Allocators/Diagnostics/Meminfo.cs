using System.Globalization;
using System.Text;
using Allocators.Physical;

namespace Allocators.Diagnostics;

/// <summary>The inputs of a /proc/meminfo text, in pages unless the name says otherwise.</summary>
internal struct MeminfoValues
{
    public long TotalPages;
    public long FreePages;
    public long ReserveHighPages;          // sum of the zones' high watermarks (totalreserve_pages)
    public long SlabReclaimablePages;
    public long SlabUnreclaimablePages;
    public long PageTablePages;
    public long? VmallocPages;             // null when the system has no vmalloc layer
    public long PercpuPages;
}

/// <summary>Builds /proc/meminfo items (rendered by <see cref="Common.MeminfoText"/>); shared by the live system and out-of-process inspectors.</summary>
internal static class MeminfoFormat
{
    private const int KbPerPage = PageFrame.PageSize / 1024;

    public static IReadOnlyList<(string Name, long Kb)> Items(in MeminfoValues v)
    {
        long slab = v.SlabReclaimablePages + v.SlabUnreclaimablePages;
        // MemAvailable as si_mem_available estimates it: free pages above the reserve plus half the reclaimable slab.
        long available = Math.Max(0, v.FreePages - v.ReserveHighPages + v.SlabReclaimablePages / 2);
        var items = new List<(string, long)>
        {
            ("MemTotal", v.TotalPages * KbPerPage),
            ("MemFree", v.FreePages * KbPerPage),
            ("MemAvailable", available * KbPerPage),
            ("Slab", slab * KbPerPage),
            ("SReclaimable", v.SlabReclaimablePages * KbPerPage),
            ("SUnreclaim", v.SlabUnreclaimablePages * KbPerPage),
            ("PageTables", v.PageTablePages * KbPerPage),
        };
        if (v.VmallocPages is { } vmallocPages) items.AddRange(Vmalloc.VmallocAllocator.MeminfoItems(vmallocPages));
        items.Add(("Percpu", v.PercpuPages * KbPerPage));
        return items;
    }

}
