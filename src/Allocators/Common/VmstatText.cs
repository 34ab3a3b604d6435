using System.Globalization;
using System.Text;

namespace Allocators.Common;

/// <summary>The /proc/vmstat line format: <c>name value</c>, one counter a line. Every vmstat view renders through it.</summary>
internal static class VmstatText
{
    /// <summary>One <c>name value</c> line per item.</summary>
    public static string Format(IEnumerable<(string Name, long Value)> items)
    {
        var sb = new StringBuilder();
        foreach (var (name, value) in items) sb.Append(CultureInfo.InvariantCulture, $"{name} {value}\n");
        return sb.ToString();
    }
}
