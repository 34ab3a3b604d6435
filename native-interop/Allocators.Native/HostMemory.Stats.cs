using System.Globalization;

namespace Allocators.Native;

public static partial class HostMemory
{
    private static readonly char[] s_blanks = [' ', '\t'];

    /// <summary>The current resident set size in bytes, from <c>/proc/self/statm</c>; -1 when unavailable.</summary>
    /// <returns>Resident bytes, or -1.</returns>
    public static long ResidentSetBytes()
    {
        string? text = TryRead("/proc/self/statm");
        if (text is null)
        {
            return -1;
        }

        string[] fields = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 2 || !long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out long pages))
        {
            return -1;
        }

        return pages * (long)PageSize;
    }

    /// <summary>The peak resident set size in bytes (<c>VmHWM</c> in <c>/proc/self/status</c>); -1 when unavailable.</summary>
    /// <returns>Peak resident bytes, or -1.</returns>
    public static long PeakResidentSetBytes()
    {
        string? text = TryRead("/proc/self/status");
        if (text is null)
        {
            return -1;
        }

        foreach (string line in text.Split('\n'))
        {
            if (!line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                continue;
            }

            string[] fields = line["VmHWM:".Length..].Split(s_blanks, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 1 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kib))
            {
                return fields.Length >= 2 && fields[1] != "kB" ? -1 : kib * 1024;
            }

            return -1;
        }

        return -1;
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
