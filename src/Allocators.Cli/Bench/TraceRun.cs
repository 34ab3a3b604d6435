using System.Globalization;
using System.Text;
using Allocators.Cli.Output;
using Allocators.Workloads;
using Allocators.Workloads.Traces;
using Spectre.Console;

namespace Allocators.Cli.Bench;

/// <summary>
/// <c>bench -w traces</c>: the reclaim issue's "fault count against the optimum" table — the whole memory system
/// (fault, LRU reclaim, swap) beside plain LRU and Belady's MIN — and the random-access throughput of the system
/// against a host mmap of the same footprint, printed as markdown and written to <c>Traces.md</c>.
/// </summary>
internal static class TraceRun
{
    /// <summary>The workload name that selects this benchmark.</summary>
    public const string WorkloadName = "traces";

    /// <summary>Default memory size in pages (16 MiB of 4 KiB pages).</summary>
    public const int DefaultMemoryPages = 4096;

    /// <summary>Memories under test besides LRU and MIN, built per (frames, trace): the whole memory system with swap.</summary>
    public static Func<int, PageTrace, IEnumerable<IPagedMemory>>? Systems { get; set; } = TraceBench.WholeSystem;

    /// <summary>
    /// Runs the benchmark, prints it and writes <c>Traces.md</c> to <paramref name="directory"/>; with
    /// <paramref name="json"/> the JSON document goes to standard output as well. Returns the exit code.
    /// </summary>
    public static int Run(int memoryPages, BenchScale scale, string directory, bool json)
    {
        // Full mode replays five times the accesses: steadier ratios, still seconds on the simulators.
        int length = scale.IsPublished ? PageTrace.DefaultLength * 5 : PageTrace.DefaultLength;
        var machine = MachineInfo.Collect();
        AnsiConsole.MarkupLineInterpolated($"[bold]allocators bench -w traces[/] ({scale.Name} mode): {memoryPages} pages of memory, {length} accesses per trace");
        AnsiConsole.WriteLine(machine.OneLine + ", load average " + machine.LoadAtStart);

        var rows = TraceBench.Run(memoryPages, length, PageTrace.DefaultSeed, Systems);
        var host = TraceBench.HostThroughput(memoryPages, length, PageTrace.DefaultSeed);
        var system = TraceBench.SystemThroughput(memoryPages, length, PageTrace.DefaultSeed);
        var sb = new StringBuilder();
        sb.Append("# Traces\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"`allocators bench -w traces --pages {memoryPages}{(scale.IsPublished ? " --full" : "")}`, {machine.OneLine}, load average {machine.LoadAtStart}.\n\n");
        sb.Append("## Major faults against the optimum\n\n");
        sb.Append("Each trace replayed with memory smaller than its footprint (every 4th access a write). MIN is Belady's ");
        sb.Append("offline optimum; the ratio is to MIN. Target for the memory system: at most 1.5x MIN on every trace and ");
        sb.Append("fewer faults than LRU on the loop. On uniform random no online policy can do much better than 1 - M/F ");
        sb.Append("faults per access (every page not resident is as likely to come next), so that row shows how far below ");
        sb.Append("any online policy the optimum sits there.\n\n");
        if (Systems != null)
        {
            int resident;
            using (var probe = new SwappingAddressSpace(memoryPages, memoryPages * 2)) resident = probe.ResidentLimit;
            sb.Append(CultureInfo.InvariantCulture, $"The memory system runs each trace in one process on an arena of {memoryPages} pages with a swap file; kswapd keeps ");
            sb.Append(CultureInfo.InvariantCulture, $"the zones' high watermark free, so about {resident} pages are resident (fewer frames than LRU and MIN get). ");
            sb.Append("Its faults are pages read from swap (faults and readahead alike) plus first touches (demand-zero faults, the simulators' cold misses).\n\n");
        }
        sb.Append(TraceTable.Faults(rows));
        sb.Append("\n## Throughput of a random working set twice the memory\n\n");
        sb.Append("The host row maps a real file of the footprint with MemoryMappedFile: swap-less, backed by the OS page ");
        sb.Append("cache, so with free RAM it never pages out (its faults are first touches).\n\n");
        sb.Append(TraceTable.Throughput([system, host], memoryPages, memoryPages * 2));

        string markdown = sb.ToString();
        AnsiConsole.WriteLine();
        AnsiConsole.Console.Profile.Out.Writer.Write(markdown);
        Directory.CreateDirectory(directory);
        string path = Path.GetFullPath(Path.Combine(directory, "Traces.md"));
        File.WriteAllText(path, markdown);
        AnsiConsole.MarkupLineInterpolated($"Written to [bold]{path}[/].");
        if (json) JsonOutput.Write(TraceJsonReport.Build(rows, host, memoryPages, path), CliJsonContext.Default.TraceJsonReport);
        return 0;
    }
}
