using System.Globalization;
using System.Text;

namespace Allocators.Slab;

/// <summary>The numbers of one /proc/slabinfo line (SLUB has no tunables and no shared arrays: those columns print 0).</summary>
internal readonly record struct SlabInfoRow(string Name, long ActiveObjects, long TotalObjects, int SlotSize, int ObjectsPerSlab,
    int PagesPerSlab, long Slabs);

/// <summary>
/// The one /proc/slabinfo renderer (version 2.1), shared by the live allocator (<see cref="SlabAllocator.SlabInfo"/>)
/// and the inspector, which fills the rows from another process's caches.
/// </summary>
internal static class SlabInfoFormat
{
    /// <summary>The two header lines of slabinfo 2.1.</summary>
    public const string Header = "slabinfo - version: 2.1\n"
        + "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n";

    /// <summary>One cache's line, without the newline.</summary>
    public static string Line(in SlabInfoRow r) => string.Create(CultureInfo.InvariantCulture,
        $"{r.Name,-17} {r.ActiveObjects,6} {r.TotalObjects,6} {r.SlotSize,6} {r.ObjectsPerSlab,4} {r.PagesPerSlab,4} : tunables {0,4} {0,4} {0,4} : slabdata {r.Slabs,6} {r.Slabs,6} {0,6}");

    /// <summary>The whole file: header and one line per row.</summary>
    public static string Render(IEnumerable<SlabInfoRow> rows)
    {
        var sb = new StringBuilder(Header);
        foreach (var r in rows) sb.Append(Line(r)).Append('\n');
        return sb.ToString();
    }
}
