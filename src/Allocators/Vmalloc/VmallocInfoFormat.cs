using System.Globalization;
using System.Text;

namespace Allocators.Vmalloc;

/// <summary>One /proc/vmallocinfo line per area; shared by the live allocator and out-of-process inspectors.</summary>
internal static class VmallocInfoFormat
{
    /// <summary>
    /// Appends the line of <paramref name="area"/>: <c>0x%016lx-0x%016lx %7ld</c> (size with the guard page), the caller,
    /// <c>pages=</c>, the kind words and, for vmalloc areas, the pages per node (<paramref name="pagesPerNode"/>).
    /// </summary>
    public static void AppendArea(StringBuilder sb, in VmapArea area, string? callSite, ReadOnlySpan<int> pagesPerNode)
    {
        sb.Append(CultureInfo.InvariantCulture, $"0x{area.Start:x16}-0x{area.End:x16} {(long)(area.End - area.Start),7}");
        if ((area.Flags & VmAreaFlags.Unpurged) != 0)
        {
            sb.Append(" unpurged vm_area\n");
            return;
        }
        if ((area.Flags & VmAreaFlags.MapRam) != 0)
        {
            sb.Append(" vm_map_ram\n");
            return;
        }
        if (callSite != null) sb.Append(' ').Append(callSite);
        if (area.NrPages > 0) sb.Append(CultureInfo.InvariantCulture, $" pages={area.NrPages}");
        if ((area.Flags & VmAreaFlags.Alloc) != 0) sb.Append(" vmalloc");
        if ((area.Flags & VmAreaFlags.Map) != 0) sb.Append(" vmap");
        for (int n = 0; n < pagesPerNode.Length; n++)
            if (pagesPerNode[n] > 0) sb.Append(CultureInfo.InvariantCulture, $" N{n}={pagesPerNode[n]}");
        sb.Append('\n');
    }
}
