using System.ComponentModel;
using System.Diagnostics;
using Allocators.Cli.Bench;
using Allocators.Workloads;
using Allocators.Cli.Output;
using Allocators.Native;
using Allocators.Peers;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>
/// The comparative workload suite: every workload on every available allocator at 1, 2, 4 ... cores and 2x cores
/// threads; prints tables with ratios against glibc malloc and writes bench-results/*.md and SVG charts.
/// </summary>
/// <remarks>
/// jemalloc (Debian's build uses static TLS) only loads when GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 was
/// in the environment when the process started. When it is installed but not loadable for that reason, bench starts
/// itself once more with the variable added (ALLOCATORS_BENCH_REEXEC=1 marks the child, so it never loops) and
/// returns the child's exit code; --no-reexec skips that and reports jemalloc as skipped.
/// </remarks>
internal sealed class BenchCommand : Command<BenchCommand.Settings>
{
    /// <summary>Marks the re-executed child so it never re-executes again.</summary>
    public const string ReexecGuard = "ALLOCATORS_BENCH_REEXEC";

    private const string StaticTlsTunable = "glibc.rtld.optional_static_tls=16384";

    public sealed class Settings : JsonSettings
    {
        [CommandOption("--quick")]
        [Description("Quick mode (default): 1/32 of every workload's published run (same sizes and intervals, shorter), binary-trees at depth 15; the whole suite in under a minute.")]
        public bool Quick { get; init; }

        [CommandOption("--full")]
        [Description("Full mode: every workload at its published parameters (mimalloc-bench's invocations, binary-trees depth 21), plus the per-thread-handle rows of Allocators.")]
        public bool Full { get; init; }

        [CommandOption("-t|--threads <LIST>")]
        [Description("Thread counts, comma separated (default: 1, 2, 4 ... cores, 2x cores).")]
        public string? Threads { get; init; }

        [CommandOption("-w|--workload <LIST>")]
        [Description("Workloads to run, comma separated (default all): larson, xmalloc-test, cache-scratch, cache-thrash, mstress, glibc-simple, glibc-thread, alloc-test, binary-trees; or traces alone (page-replacement faults against LRU and Belady's MIN, see --pages).")]
        public string? Workload { get; init; }

        [CommandOption("-a|--allocator <LIST>")]
        [Description("Allocators to run, comma separated (default all available; the per-thread-handle rows allocators-handle and allocators-cache-handle only in --full; glibc is always added as the baseline).")]
        public string? Allocator { get; init; }

        [CommandOption("-o|--out <DIR>")]
        [Description("Where the markdown report and SVG charts go (default bench-results).")]
        public string Out { get; init; } = "bench-results";

        [CommandOption("--isolate")]
        [Description("Run every measurement in a fresh child process (adds a process start per run): no allocator inherits what an earlier run left in it, and the footprint column covers glibc, NativeMemory, mimalloc, jemalloc and tcmalloc too, from their own statistics.")]
        public bool Isolate { get; init; }

        [CommandOption("--pages <N>")]
        [Description("-w traces only: memory size in pages (default 4096); the traces' footprints are 1.2x and 2x this.")]
        public int Pages { get; init; } = TraceRun.DefaultMemoryPages;

        [CommandOption("--no-reexec")]
        [Description("Do not restart with GLIBC_TUNABLES set when jemalloc needs it; jemalloc is then skipped.")]
        public bool NoReexec { get; init; }

        public override ValidationResult Validate()
        {
            if (Quick && Full) return ValidationResult.Error("--quick and --full exclude each other.");
            if (Pages < 8) return ValidationResult.Error("--pages must be at least 8.");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        // With --json the JSON document is all that goes to standard output: the progress and the tables go to standard error.
        if (settings.Json) AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        BenchScale scale = settings.Full ? BenchScale.Full : BenchScale.Quick;
        // The trace benchmark measures page replacement, not allocators: none of the suite's machinery applies.
        if (string.Equals(settings.Workload?.Trim(), TraceRun.WorkloadName, StringComparison.OrdinalIgnoreCase))
        {
            if (settings.Isolate || settings.Allocator is not null || settings.Threads is not null)
            {
                AnsiConsole.MarkupLine("[red]-w traces takes only --pages, --quick/--full, --out and --json.[/]");
                return 2;
            }
            return TraceRun.Run(settings.Pages, scale, settings.Out, settings.Json);
        }
        if (!settings.NoReexec && NeedsReexecForJemalloc() is { } child) return child;

        var workloads = Select(settings.Workload, WorkloadCatalog.All, w => w.Name, "workload");
        var allocators = string.IsNullOrWhiteSpace(settings.Allocator)
            ? [.. AllocatorUnderTest.DefaultSet(scale)]
            : Select(settings.Allocator, AllocatorUnderTest.All, a => a.Name, "allocator");
        if (workloads is null || allocators is null) return 2;
        if (!allocators.Any(a => a.Name == AllocatorUnderTest.BaselineName))
            allocators = [.. AllocatorUnderTest.All.Where(a => a.Name == AllocatorUnderTest.BaselineName || allocators.Contains(a))];
        IReadOnlyList<int> threads = BenchPlan.DefaultThreadCounts(Environment.ProcessorCount);
        if (settings.Threads is { } list)
        {
            var parsed = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => int.TryParse(s, out int n) && n > 0 ? n : -1).ToList();
            if (parsed.Count == 0 || parsed.Any(n => n < 0))
            {
                AnsiConsole.MarkupLineInterpolated($"[red]--threads must be a comma-separated list of positive numbers: {list}[/]");
                return 2;
            }
            threads = parsed.Distinct().ToList();
        }

        var machine = MachineInfo.Collect();
        var plan = new BenchPlan(workloads, allocators, threads, scale, settings.Isolate) { RunIsolated = BenchIsolation.RunInChild };
        AnsiConsole.MarkupLineInterpolated($"[bold]allocators bench[/] ({scale.Name} mode): {workloads.Count} workloads, threads {string.Join(", ", threads)}, {plan.RunCount} runs{(scale.Rounds > 1 ? $" x {scale.Rounds} rounds (best kept)" : "")}{(settings.Isolate ? ", each in its own process" : "")}");
        AnsiConsole.WriteLine(machine.OneLine + ", load average " + machine.LoadAtStart);
        foreach (var a in allocators)
        {
            if (a.IsAvailable) AnsiConsole.MarkupLineInterpolated($"  [green]{a.Name,-23}[/] {a.Description}");
            else AnsiConsole.MarkupLineInterpolated($"  [yellow]{a.Name,-23} {a.Status}[/]");
        }
        AnsiConsole.MarkupLine("[grey]Numbers from one run on a shared machine: other builds running in parallel make them noisy.[/]");
        AnsiConsole.WriteLine();

        var clock = Stopwatch.StartNew();
        var runner = new BenchRunner(plan);
        List<BenchResult> results = BenchProgress.Run(runner, plan, cancellationToken);
        clock.Stop();

        var report = new BenchReport(plan, results, machine, clock.Elapsed);
        report.WriteConsole();
        string written = report.WriteFiles(settings.Out);
        AnsiConsole.MarkupLineInterpolated($"Report and charts written to [bold]{written}[/] in {clock.Elapsed.TotalSeconds:0.0} s.");
        if (settings.Json) BenchJson.Write(report.Json(written));

        var failures = results.Where(r => !r.Verified).ToList();
        foreach (var f in failures)
            AnsiConsole.MarkupLineInterpolated($"[red bold]FAILED[/] [red]{f.Workload} on {f.Allocator} with {f.Threads} threads: {f.Detail}[/]");
        return failures.Count == 0 ? 0 : 1;
    }

    /// <summary>Restarts this command with the static-TLS tunable when jemalloc needs it; the child's exit code, or null to go on here.</summary>
    private static int? NeedsReexecForJemalloc()
    {
        if (Environment.GetEnvironmentVariable(ReexecGuard) == "1") return null;
        if (NativeAllocators.Jemalloc.IsAvailable || !NativeAllocators.Jemalloc.Status.Contains("GLIBC_TUNABLES", StringComparison.Ordinal)) return null;
        var start = CliProcess.StartInfo(Environment.GetCommandLineArgs().Skip(1));
        string? tunables = Environment.GetEnvironmentVariable("GLIBC_TUNABLES");
        start.Environment["GLIBC_TUNABLES"] = string.IsNullOrEmpty(tunables) ? StaticTlsTunable : tunables + ":" + StaticTlsTunable;
        start.Environment[ReexecGuard] = "1";
        AnsiConsole.MarkupLine($"[grey]jemalloc needs GLIBC_TUNABLES={StaticTlsTunable} at process start: restarting once with it (--no-reexec to skip).[/]");
        using var child = Process.Start(start);
        if (child is null) return null;
        child.WaitForExit();
        return child.ExitCode;
    }

    private static List<T>? Select<T>(string? list, IReadOnlyList<T> all, Func<T, string> name, string what)
    {
        if (string.IsNullOrWhiteSpace(list)) return all.ToList();
        var chosen = new List<T>();
        foreach (string item in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var match = all.FirstOrDefault(x => string.Equals(name(x), item, StringComparison.OrdinalIgnoreCase));
            if (match is null)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]unknown {what} '{item}'; known: {string.Join(", ", all.Select(name))}[/]");
                return null;
            }
            if (!chosen.Contains(match)) chosen.Add(match);
        }
        // Keep the suite's order.
        return all.Where(chosen.Contains).ToList();
    }
}
