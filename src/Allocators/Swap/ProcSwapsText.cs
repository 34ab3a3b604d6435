using System.Text;

namespace Allocators.Swap;

/// <summary>The text of /proc/swaps (swap_show, mm/swapfile.c).</summary>
internal static class ProcSwapsText
{
    /// <summary>
    /// The header, then per device: the path with space, tab, newline and backslash escaped as \ooo (seq_file_path),
    /// padded with spaces to 40 columns (at least one), "file\t", then size and used in KiB each followed by a tab, and
    /// a second tab while the number is below 10000000, then the priority.
    /// </summary>
    public static string Format(IEnumerable<SwapDevice> devices)
    {
        var text = new StringBuilder("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        foreach (SwapDevice device in devices)
        {
            string name = Escape(device.Path);
            long bytes = device.Pages * 4;      // K(si->pages)
            long inuse = device.UsedPages * 4;  // K(inuse_pages)
            text.Append(name).Append(' ', Encoding.UTF8.GetByteCount(name) is var len && len < 40 ? 40 - len : 1)
                .Append("file\t").Append('\t').Append(bytes).Append('\t').Append(bytes < 10000000 ? "\t" : "")
                .Append(inuse).Append('\t').Append(inuse < 10000000 ? "\t" : "")
                .Append(device.Priority).Append('\n');
        }
        return text.ToString();
    }

    /// <summary>mangle_path with " \t\n\\": each of those characters becomes a backslash and three octal digits.</summary>
    private static string Escape(string path)
    {
        if (path.AsSpan().IndexOfAny(" \t\n\\") < 0) return path;
        var escaped = new StringBuilder(path.Length + 8);
        foreach (char c in path)
        {
            if (c is ' ' or '\t' or '\n' or '\\') escaped.Append('\\').Append(Convert.ToString(c, 8).PadLeft(3, '0'));
            else escaped.Append(c);
        }
        return escaped.ToString();
    }
}
