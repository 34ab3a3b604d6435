using System.Globalization;
using System.Text;

namespace Allocators.Common;

/// <summary>
/// The /proc/meminfo line format (the kernel's show_val_kb): <c>Name:</c> padded to 16 columns, the value in kB right
/// aligned in 8, then <c> kB</c>. Every layer that prints meminfo lines and the out-of-process inspector share it.
/// </summary>
internal static class MeminfoText
{
    /// <summary>One <c>Name:   value kB</c> line per item.</summary>
    public static string Format(IReadOnlyList<(string Name, long Kb)> items)
    {
        var sb = new StringBuilder();
        foreach (var (name, kb) in items) sb.Append(CultureInfo.InvariantCulture, $"{name + ":",-16}{kb,8} kB\n");
        return sb.ToString();
    }
}
