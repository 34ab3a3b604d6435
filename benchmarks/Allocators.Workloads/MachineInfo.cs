using System.Globalization;
using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;

namespace Allocators.Workloads;

/// <summary>The machine a bench run came from (printed with every report).</summary>
internal sealed record MachineInfo(string Cpu, int Cores, long MemoryBytes, string Os, string Runtime, DateTime UtcTime, IReadOnlyList<string> Libraries)
{
    /// <summary>Collects what the process can see.</summary>
    public static MachineInfo Collect()
    {
        string cpu = "unknown CPU";
        long memory = 0;
        try
        {
            string? model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (model is not null) cpu = model[(model.IndexOf(':') + 1)..].Trim();
            string? total = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            if (total is not null)
                memory = long.Parse(total.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            // Not Linux, or /proc is hidden: keep the defaults.
        }
        var libraries = new List<string>();
        foreach (var library in NativeAllocators.All)
        {
            if (!library.IsAvailable || library.LibraryPath is null) continue;
            string file = library.LibraryPath;
            try
            {
                if (File.ResolveLinkTarget(file, returnFinalTarget: true) is { } target) file = target.FullName;
            }
            catch (IOException)
            {
                // Keep the loaded path.
            }
            libraries.Add($"{library.Name}: {Path.GetFileName(file)}");
        }
        return new MachineInfo(cpu, Environment.ProcessorCount, memory, RuntimeInformation.OSDescription,
            RuntimeInformation.FrameworkDescription, DateTime.UtcNow, libraries);
    }

    /// <summary>The 1, 5 and 15 minute load averages (/proc/loadavg), or "unknown": how busy the shared machine was.</summary>
    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return "unknown";
        }
    }

    /// <summary>Load averages when the run started.</summary>
    public string LoadAtStart { get; init; } = LoadAverage();

    /// <summary>One line for headers.</summary>
    public string OneLine => string.Create(CultureInfo.InvariantCulture,
        $"{Cpu}, {Cores} cores, {MemoryBytes / (1024.0 * 1024 * 1024):0.#} GiB, {Os}, {Runtime}, {UtcTime:yyyy-MM-dd HH:mm} UTC");
}
