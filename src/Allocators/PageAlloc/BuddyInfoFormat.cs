using System.Globalization;
using System.Text;

namespace Allocators.PageAlloc;

/// <summary>
/// The one /proc/buddyinfo renderer: a zone's line from its <see cref="ZoneData"/>, whether the zone is this process's
/// (<see cref="PageAllocator.BuddyInfo"/>) or a copy read out of another process or a core file (the inspector).
/// </summary>
internal static class BuddyInfoFormat
{
    /// <summary>Appends <c>Node %d, zone %8s</c> and the free-block count of every order (<c>%6lu </c>); nothing for an unpopulated zone.</summary>
    public static void AppendZone(StringBuilder sb, in ZoneData zone)
    {
        if (!zone.Populated) return;
        sb.Append(CultureInfo.InvariantCulture, $"Node {zone.Node}, zone {zone.Type.KernelName(),8} ");
        for (int o = 0; o <= PageAllocator.MaxOrder; o++) sb.Append(CultureInfo.InvariantCulture, $"{zone.FreeAreas[o].Count,6} ");
        sb.Append('\n');
    }
}
