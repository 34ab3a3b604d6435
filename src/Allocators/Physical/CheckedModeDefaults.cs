using System.Globalization;

namespace Allocators.Physical;

/// <summary>The checked-mode defaults parsed from <see cref="CheckedModeOptions.EnvironmentVariable"/>.</summary>
internal sealed class CheckedModeDefaults
{
    public bool InitOnAlloc, InitOnFree, SlabFreelistRandom, ShufflePages, Kasan, KasanStackTrace = true, KasanPageGuards;
    public int KasanRedZone = 32, KfenceSampleInterval, KfenceSampleRate, KfenceObjects = 255;
    public long? QuarantineBytes;

    /// <summary>Parses a comma-separated list; null or empty gives every mode off.</summary>
    /// <exception cref="ArgumentException">An entry is unknown or its value malformed.</exception>
    public static CheckedModeDefaults Parse(string? text)
    {
        var d = new CheckedModeDefaults();
        if (string.IsNullOrWhiteSpace(text)) return d;
        foreach (string raw in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = raw.IndexOf('=');
            string key = eq < 0 ? raw : raw[..eq];
            string? value = eq < 0 ? null : raw[(eq + 1)..];
            switch (key)
            {
                case "init_on_alloc": d.InitOnAlloc = Flag(raw, value); break;
                case "init_on_free": d.InitOnFree = Flag(raw, value); break;
                case "slab_freelist_random": d.SlabFreelistRandom = Flag(raw, value); break;
                case "page_alloc.shuffle": d.ShufflePages = Flag(raw, value); break;
                case "kasan": d.Kasan = Flag(raw, value); break;
                case "kasan.stacktrace": d.KasanStackTrace = Flag(raw, value); break;
                case "kasan.redzone": d.KasanRedZone = (int)Number(raw, value, int.MaxValue); break;
                case "kasan.quarantine": d.QuarantineBytes = Number(raw, value, long.MaxValue); break;
                case "kasan.page_guards": d.KasanPageGuards = Flag(raw, value); break;
                case "kfence.sample_interval": d.KfenceSampleInterval = (int)Number(raw, value, int.MaxValue); break;
                case "kfence.sample_rate": d.KfenceSampleRate = (int)Number(raw, value, int.MaxValue); break;
                case "kfence.num_objects": d.KfenceObjects = (int)Number(raw, value, int.MaxValue); break;
                default: throw new ArgumentException($"{CheckedModeOptions.EnvironmentVariable}: unknown entry '{raw}'.");
            }
        }
        return d;
    }

    private static bool Flag(string entry, string? value) => value switch
    {
        null or "1" or "on" or "true" => true,
        "0" or "off" or "false" => false,
        _ => throw new ArgumentException($"{CheckedModeOptions.EnvironmentVariable}: '{entry}' wants 0/1, on/off or true/false."),
    };

    private static long Number(string entry, string? value, long max) =>
        long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n <= max
            ? n
            : throw new ArgumentException($"{CheckedModeOptions.EnvironmentVariable}: '{entry}' wants a non-negative number.");
}
