using System.Globalization;

namespace Allocators.Physical;

/// <summary>
/// The value of <see cref="PhysicalMemoryOptions.HighMemoryEnvironmentVariable"/>: a byte size with an optional K/M/G
/// suffix (the kernel's <c>memparse</c>) or a percentage of boot memory.
/// </summary>
internal readonly record struct HighMemorySize(long Bytes, int Percent)
{
    /// <summary>Null for an unset or empty variable; throws <see cref="ArgumentException"/> naming the variable and the text otherwise.</summary>
    public static HighMemorySize? Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        string t = text.Trim();
        if (t.EndsWith('%'))
        {
            if (int.TryParse(t.AsSpan(0, t.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out int percent) && percent is >= 0 and < 100)
                return new HighMemorySize(0, percent);
        }
        else
        {
            int shift = char.ToUpperInvariant(t[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 };
            var digits = shift == 0 ? t.AsSpan() : t.AsSpan(0, t.Length - 1);
            if (long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n <= long.MaxValue >> shift)
                return new HighMemorySize(n << shift, 0);
        }
        throw new ArgumentException($"{PhysicalMemoryOptions.HighMemoryEnvironmentVariable}=\"{text}\" is neither a size (e.g. 64M, 1G) nor a share of memory below 100 % (e.g. 50%).");
    }

    /// <summary>The high-memory bytes this asks of an arena of <paramref name="size"/> bytes.</summary>
    public long BytesOf(long size) => Percent > 0 ? size * Percent / 100 : Math.Min(Bytes, size);
}
