using System.Globalization;
using System.Text;
using Spectre.Console;
using Allocators.Workloads;

namespace Allocators.Cli.Bench;

/// <summary>Turns bench results into console tables, a markdown report, a README snippet and SVG charts.</summary>
internal sealed class BenchReport(BenchPlan plan, IReadOnlyList<BenchResult> results, MachineInfo machine, TimeSpan wallTime)
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    private readonly string _loadAtEnd = MachineInfo.LoadAverage();

    /// <summary>The results.</summary>
    public IReadOnlyList<BenchResult> Results => results;

    /// <summary>The <c>--json</c> document of this run; <paramref name="directory"/> is where its files went.</summary>
    public BenchJsonReport Json(string? directory) => BenchJson.Build(this, plan, machine, wallTime, directory);

    /// <summary>Throughput with an SI suffix: 950 k, 12.3 M, 1.20 G.</summary>
    public static string FormatRate(double perSecond) => perSecond switch
    {
        >= 1e9 => (perSecond / 1e9).ToString("0.00", Inv) + " G",
        >= 1e6 => (perSecond / 1e6).ToString(perSecond >= 1e8 ? "0" : "0.0", Inv) + " M",
        >= 1e3 => (perSecond / 1e3).ToString("0", Inv) + " k",
        _ => perSecond.ToString("0", Inv),
    };

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString(bytes >= 100 << 20 ? "0" : "0.0", Inv);

    /// <summary>The result of one run, or null.</summary>
    public BenchResult? Find(string workload, string allocator, int threads)
        => results.FirstOrDefault(r => r.Workload == workload && r.Allocator == allocator && r.Threads == threads);

    /// <summary>Throughput relative to glibc at the same workload and thread count.</summary>
    public double? Ratio(BenchResult r)
    {
        var baseline = Find(r.Workload, AllocatorUnderTest.BaselineName, r.Threads);
        return baseline is { Verified: true, OpsPerSecond: > 0 } && r.Verified ? r.OpsPerSecond / baseline.OpsPerSecond : null;
    }

    private IEnumerable<string> AllocatorsOf(string workload)
        => plan.Allocators.Select(a => a.Name).Where(a => results.Any(r => r.Workload == workload && r.Allocator == a));

    /// <summary>The thread count the targets are judged at: 2 when it was run, else the core count, else the largest.</summary>
    public int TargetThreads => plan.ThreadCounts.Contains(2) ? 2 : plan.ThreadCounts.Contains(machine.Cores) ? machine.Cores : plan.ThreadCounts.Max();

    private string Cell(BenchResult? r)
    {
        if (r is null) return "-";
        if (!r.Verified) return "FAILED";
        double? ratio = Ratio(r);
        return FormatRate(r.OpsPerSecond) + (ratio is { } x ? string.Create(Inv, $" ({x:0.00}x)") : "");
    }

    private string RssCell(string workload, string allocator)
        => string.Join(" / ", plan.ThreadCounts.Select(t => Find(workload, allocator, t) is { } r ? Mib(r.RssGrowthBytes) : "-"));

    private string FragCell(string workload, string allocator)
    {
        // A ratio over a few live bytes says nothing (one slab page over 16 bytes): only from 1 MiB live.
        var parts = plan.ThreadCounts.Select(t => Find(workload, allocator, t) is { PeakLiveBytes: >= 1 << 20 } r ? r.Fragmentation : null).ToList();
        return parts.All(p => p is null) ? "" : string.Join(" / ", parts.Select(p => p is { } x ? x.ToString("0.00", Inv) : "-"));
    }

    private (string[] Header, List<string[]> Rows) TableOf(Workload workload)
    {
        var header = new List<string> { "allocator" };
        header.AddRange(plan.ThreadCounts.Select(t => string.Create(Inv, $"{t} thr {workload.Unit} (x glibc)")));
        header.Add($"RSS growth MiB ({string.Join("/", plan.ThreadCounts)} thr)");
        header.Add("footprint / live");
        var rows = new List<string[]>();
        foreach (string a in AllocatorsOf(workload.Name))
        {
            var row = new List<string> { a };
            row.AddRange(plan.ThreadCounts.Select(t => Cell(Find(workload.Name, a, t))));
            row.Add(RssCell(workload.Name, a));
            row.Add(FragCell(workload.Name, a));
            rows.Add([.. row]);
        }
        return ([.. header], rows);
    }

    /// <summary>Prints one table per workload and the target summary.</summary>
    public void WriteConsole()
    {
        foreach (var w in plan.Workloads)
        {
            var (header, rows) = TableOf(w);
            if (rows.Count == 0) continue;
            var table = new Table().Border(TableBorder.Rounded)
                .Title($"[bold]{Markup.Escape(w.Name)}[/]: {Markup.Escape(w.Description)}");
            foreach (string h in header) table.AddColumn(new TableColumn(Markup.Escape(h)).RightAligned());
            table.Columns[0].LeftAligned();
            foreach (var row in rows)
                table.AddRow(row.Select(c => c == "FAILED" ? "[red]FAILED[/]" : Markup.Escape(c)).ToArray());
            AnsiConsole.Write(table);
        }
        AnsiConsole.WriteLine();
        AnsiConsole.MarkupLine("[bold]Targets[/]");
        foreach (var t in Targets())
            AnsiConsole.MarkupLine($"  {(t.Met is null ? "[grey]n/a [/]" : t.Met.Value ? "[green]met [/]" : "[red]MISS[/]")} {Markup.Escape(t.Name)}: {Markup.Escape(t.Evidence)}");
    }

    /// <summary>One target of the issue and how this run did.</summary>
    public sealed record Target(string Name, bool? Met, string Evidence);

    /// <summary>
    /// Evaluates the targets on this run's numbers (ratios from this one run). They judge the headline rows, the plain
    /// calls a program makes (allocators, allocators-cache); the per-thread-handle rows are extras and judged by none.
    /// </summary>
    public List<Target> Targets()
    {
        int t = TargetThreads;
        var list = new List<Target>();
        foreach (string w in new[] { "larson", "xmalloc-test" })
        {
            foreach (string a in new[] { "allocators", "allocators-cache" })
            {
                var mine = Find(w, a, t);
                if (mine is null) continue;
                var glibc = Find(w, "glibc", t);
                var mi = Find(w, "mimalloc", t);
                bool? met = mine.Verified && glibc is not null ? mine.OpsPerSecond >= 2 * glibc.OpsPerSecond && (mi is null || mine.OpsPerSecond >= mi.OpsPerSecond) : null;
                list.Add(new Target($"{w} at {t} threads, {a} >= 2x glibc and >= mimalloc", met,
                    string.Create(Inv, $"{FormatRate(mine.OpsPerSecond)} vs glibc {Rate(glibc)} ({Ratio(mine) ?? 0:0.00}x), mimalloc {Rate(mi)} ({(mi is { OpsPerSecond: > 0 } ? mine.OpsPerSecond / mi.OpsPerSecond : 0):0.00}x)")));
            }
        }
        var depth = plan.Scale.TreeDepth;
        foreach (string a in new[] { "allocators-cache", "allocators" })
        {
            var mine = Find("binary-trees", a, t);
            if (mine is null) continue;
            var gc = Find("binary-trees", "GC", t);
            var glibc = Find("binary-trees", "glibc", t);
            bool? met = mine.Verified && gc is not null && glibc is not null ? mine.Elapsed < gc.Elapsed && mine.Elapsed < glibc.Elapsed : null;
            list.Add(new Target($"binary-trees depth {depth} at {t} threads, {a} faster than GC and glibc{(depth == 21 ? "" : " (the target is depth 21: run --full)")}", met,
                string.Create(Inv, $"{mine.Elapsed.TotalSeconds:0.000} s vs GC {Seconds(gc)}, glibc {Seconds(glibc)}")));
        }
        foreach (string a in new[] { "allocators", "allocators-cache" })
        {
            var parts = new List<string>();
            bool? met = null;
            foreach (int threads in plan.ThreadCounts.Where(n => n > 1))
            {
                var mine = Find("cache-scratch", a, threads);
                var reference = Find("cache-scratch", "private", threads);
                if (mine is null || reference is null || reference.OpsPerSecond <= 0) continue;
                double share = mine.OpsPerSecond / reference.OpsPerSecond;
                met = (met ?? true) && mine.Verified && share >= 0.9;
                parts.Add(string.Create(Inv, $"{threads} thr {share:P0} of private"));
            }
            if (parts.Count > 0) list.Add(new Target($"cache-scratch, {a} within 10 % of the per-thread-private run", met, string.Join(", ", parts)));
        }
        {
            var parts = new List<string>();
            bool? met = null;
            foreach (int threads in plan.ThreadCounts)
            {
                var mine = Find("larson", "allocators", threads);
                if (mine?.Fragmentation is not { } f) continue;
                met = (met ?? true) && f <= 1.25;
                parts.Add(string.Create(Inv, $"{threads} thr {f:0.00}x ({Mib(mine.PeakFootprintBytes ?? 0)} MiB pages / {Mib(mine.PeakLiveBytes)} MiB live)"));
            }
            if (parts.Count > 0)
            {
                parts.Add(string.Create(Inv, $"kmalloc size-class rounding alone is {Larson.KmallocRounding():0.00}x for larson's sizes"));
                // Isolated runs measure the native allocators' footprints too: say where they stand.
                foreach (string peer in AllocatorsOf("larson").Where(a => !a.StartsWith("allocators", StringComparison.Ordinal)))
                {
                    var ratios = plan.ThreadCounts.Select(t => Find("larson", peer, t)?.Fragmentation).ToList();
                    if (ratios.Any(r => r is not null))
                        parts.Add(string.Create(Inv, $"{peer} {string.Join(" / ", ratios.Select(r => r is { } x ? x.ToString("0.00", Inv) + "x" : "-"))}"));
                }
                list.Add(new Target("larson peak footprint <= 1.25x peak live bytes (allocators)", met, string.Join(", ", parts)));
            }
        }
        return list;
    }

    private static string Rate(BenchResult? r) => r is null ? "-" : FormatRate(r.OpsPerSecond);

    private static string Seconds(BenchResult? r) => r is null ? "-" : r.Elapsed.TotalSeconds.ToString("0.000", Inv) + " s";

    /// <summary>Writes the markdown report, the README snippet and the charts; returns the directory.</summary>
    public string WriteFiles(string directory)
    {
        Directory.CreateDirectory(directory);
        var charts = BenchCharts.Write(this, plan, directory);
        string reportName = $"bench-{plan.Scale.Name}.md";
        File.WriteAllText(Path.Combine(directory, reportName), Markdown(charts, imagePrefix: ""));
        File.WriteAllText(Path.Combine(directory, "README-snippet.md"), Snippet(charts, reportName, Path.GetFileName(Path.GetFullPath(directory))));
        return Path.GetFullPath(directory);
    }

    private static string MdRow(IEnumerable<string> cells) => "| " + string.Join(" | ", cells.Select(c => c.Replace("|", "\\|", StringComparison.Ordinal))) + " |";

    private void AppendTables(StringBuilder sb)
    {
        foreach (var w in plan.Workloads)
        {
            var (header, rows) = TableOf(w);
            if (rows.Count == 0) continue;
            sb.Append(Inv, $"### {w.Name}\n\n{w.Description}.\n\n");
            sb.Append(MdRow(header)).Append('\n');
            sb.Append(MdRow(header.Select((_, i) => i == 0 ? "---" : "---:"))).Append('\n');
            foreach (var row in rows) sb.Append(MdRow(row)).Append('\n');
            sb.Append('\n');
        }
    }

    private void AppendTargets(StringBuilder sb)
    {
        sb.Append("| target | status | this run |\n| --- | --- | --- |\n");
        foreach (var t in Targets())
            sb.Append(MdRow([t.Name, t.Met is null ? "n/a" : t.Met.Value ? "met" : "**missed**", t.Evidence])).Append('\n');
        sb.Append('\n');
    }

    private void AppendMachine(StringBuilder sb)
    {
        sb.Append(Inv, $"Machine: {machine.OneLine}.  \n");
        sb.Append(Inv, $"Native allocators: {(machine.Libraries.Count == 0 ? "none" : string.Join(", ", machine.Libraries))}.  \n");
        foreach (var a in plan.Allocators.Where(a => !a.IsAvailable)) sb.Append(Inv, $"{a.Name}: {a.Status}.  \n");
        sb.Append(Inv, $"Mode: {plan.Scale.Name} ({plan.Scale.Share} of every workload, binary-trees depth {plan.Scale.TreeDepth}), ");
        sb.Append(Inv, $"threads {string.Join(", ", plan.ThreadCounts)}, {results.Count} runs in {wallTime.TotalSeconds:0} s{(plan.Isolated ? ", each in a fresh process (--isolate)" : "")}. ");
        sb.Append(Inv, $"Load average (1/5/15 min) {machine.LoadAtStart} at the start, {_loadAtEnd} at the end. ");
        sb.Append("All numbers come from this one run and runs that are compared were made back to back, so the ratios compare ");
        sb.Append("like with like as far as possible; but the 2-core machine is shared with other engineers' builds and tests, so ");
        sb.Append("single numbers are noisy (runs of the same thing differ by 2x and more under that load).\n\n");
    }

    /// <summary>The full markdown report.</summary>
    public string Markdown(IReadOnlyList<string> charts, string imagePrefix)
    {
        var sb = new StringBuilder();
        sb.Append(Inv, $"# allocators bench ({plan.Scale.Name})\n\n");
        AppendMachine(sb);
        sb.Append("Cells: throughput (ratio to glibc malloc at the same thread count). RSS growth: peak resident set of the process ");
        sb.Append("during the run minus the resident set just before it. footprint / live: for Allocators the peak of the pages handed out by ");
        sb.Append("the page allocator (ManagedPages - NrFreePages - PcpPages) over the peak of the bytes the workload held live, as requested");
        sb.Append(plan.Isolated
            ? "; for the native allocators the peak growth of what their own statistics say they hold (glibc and NativeMemory: mallinfo2 arena + hblkhd; jemalloc: stats.active; tcmalloc: heap size less free and unmapped page-heap bytes; mimalloc: committed bytes where its build counts them) over the same live peak. Isolated runs start cold, so their throughput includes compiling the run's code (for Allocators, the library's too): read throughput from the in-process suite.\n\n"
            : " (native allocators' statistics are read only with --isolate, where each run has a fresh process).\n\n");
        sb.Append("## Targets\n\n");
        AppendTargets(sb);
        sb.Append("## Results\n\n");
        AppendTables(sb);
        sb.Append("## Charts\n\n");
        foreach (string chart in charts) sb.Append(Inv, $"![{Path.GetFileNameWithoutExtension(chart)}]({imagePrefix}{chart})\n");
        sb.Append("\n## Allocators compared\n\n");
        foreach (var a in plan.Allocators) sb.Append(Inv, $"- **{a.Name}**: {a.Description}{(a.IsAvailable ? "" : $" ({a.Status})")}\n");
        var failures = results.Where(r => !r.Verified).ToList();
        if (failures.Count > 0)
        {
            sb.Append("\n## Failed runs\n\n");
            foreach (var f in failures) sb.Append(Inv, $"- {f.Workload} on {f.Allocator}, {f.Threads} threads: {f.Detail}\n");
        }
        return sb.ToString();
    }

    private string Snippet(IReadOnlyList<string> charts, string reportName, string directoryName)
    {
        var sb = new StringBuilder();
        sb.Append("## Benchmarks\n\n");
        sb.Append(Inv, $"`allocators bench` runs the comparative workload suite (larson, xmalloc-test, cache-scratch, cache-thrash, mstress, ");
        sb.Append("glibc-simple, glibc-thread, alloc-test, binary-trees) on Allocators, glibc malloc, NativeMemory, mimalloc, jemalloc, ");
        sb.Append("tcmalloc, ArrayPool and the GC (jemalloc needs `GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384` at process start: ");
        sb.Append("when it is installed but not loadable, `bench` restarts itself once with that variable added, guarded by ");
        sb.Append("`ALLOCATORS_BENCH_REEXEC=1`; `--no-reexec` skips jemalloc instead). ");
        sb.Append(Inv, $"The latest {plan.Scale.Name} run (`dotnet run -c Release --project src/Allocators.Cli -- bench --{plan.Scale.Name}`):\n\n");
        AppendMachine(sb);
        sb.Append("### Targets\n\n");
        AppendTargets(sb);
        sb.Append("### Throughput (ratio to glibc malloc)\n\n");
        AppendTables(sb);
        foreach (string chart in charts) sb.Append(Inv, $"![{Path.GetFileNameWithoutExtension(chart)}]({directoryName}/{chart})\n");
        sb.Append(Inv, $"\nFull report: [{directoryName}/{reportName}]({directoryName}/{reportName}).\n");
        return sb.ToString();
    }
}
