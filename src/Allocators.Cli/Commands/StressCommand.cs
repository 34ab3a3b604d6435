using System.ComponentModel;
using System.Diagnostics;
using Allocators.Cli.Output;
using Allocators.Cli.Workloads;
using Allocators.Physical;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>Mixed multi-threaded workload over every layer with a final audit; exit 1 when the audit fails.</summary>
internal sealed class StressCommand : Command<StressCommand.Settings>
{
    public sealed class Settings : JsonSettings
    {
        [CommandOption("-t|--threads <N>")]
        [Description("Worker threads (default 0: the processor count, at least 2).")]
        public int Threads { get; init; }

        [CommandOption("-s|--seconds <S>")]
        [Description("Seconds the workload runs (default 5).")]
        public double Seconds { get; init; } = 5;

        [CommandOption("--seed <N>")]
        [Description("Seed of the workers' random choices (default 1).")]
        public int Seed { get; init; } = 1;

        [CommandOption("--arena-mib <MIB>")]
        [Description("Size of the arena in MiB (default 256).")]
        public int ArenaMiB { get; init; } = 256;

        public override ValidationResult Validate()
        {
            if (Threads is < 0 or > 1024) return ValidationResult.Error("--threads must be between 1 and 1024 (0: the processor count)");
            if (Seconds is <= 0 or > 86400 || double.IsNaN(Seconds)) return ValidationResult.Error("--seconds must be greater than 0 (and at most a day)");
            if (ArenaMiB is < 16 or > 65536) return ValidationResult.Error("--arena-mib must be between 16 and 65536");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        int threads = settings.Threads > 0 ? settings.Threads : Math.Max(2, Environment.ProcessorCount);
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = (long)settings.ArenaMiB << 20 },
        });
        using var workload = new StressWorkload(system, threads, TimeSpan.FromSeconds(settings.Seconds), settings.Seed);
        if (!settings.Json)
        {
            AnsiConsole.MarkupLine($"[bold]Allocators stress[/]: {settings.ArenaMiB} MiB arena, {threads} threads, {settings.Seconds:0.#} s over pages, "
                + "kmalloc, kmem_cache<T>, per-CPU areas and counter, memory pool; half of all frees on another thread");
        }
        var clock = Stopwatch.StartNew();
        if (settings.Json) workload.Run();
        else Progress.Run("Stress", workload.Duration, workload.Run, () => $"{workload.Operations:N0} ops, {workload.StampErrors} stamp errors");
        StressReport report = workload.Audit(clock.Elapsed.TotalSeconds);
        if (settings.Json) JsonOutput.Write(report, CliJsonContext.Default.StressReport);
        else Print(report);
        return report.Passed ? ExitCodes.Ok : ExitCodes.AuditFailed;
    }

    private static void Print(StressReport r)
    {
        var table = new Table().AddColumns("layer", "allocated", "freed", "cross-thread frees", "failures", "stamp errors");
        foreach (var l in r.Layers)
            table.AddRow(l.Layer, $"{l.Allocated:N0}", $"{l.Freed:N0}", $"{l.CrossThreadFrees:N0}", $"{l.Failures:N0}", $"{l.StampErrors:N0}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"Operations: {r.Operations:N0} in {r.Seconds:0.00} s ({r.OperationsPerSecond / 1e6:0.00} M ops/s)");
        AnsiConsole.MarkupLine($"Per-CPU counter: sum {r.PercpuCounterSum:N0}, expected {r.PercpuCounterExpected:N0}");
        AnsiConsole.WriteLine("/proc/buddyinfo at the start:");
        Console.Out.Write(r.InitialBuddyInfo);
        AnsiConsole.WriteLine("/proc/buddyinfo after ShrinkAll and DrainAllPages:");
        Console.Out.Write(r.FinalBuddyInfo);
        if (r.Passed)
        {
            AnsiConsole.MarkupLine("[green]audit passed[/]: every object accounted for, stamps intact, free lists identical to the start");
            return;
        }
        AnsiConsole.MarkupLine("[red]audit failed[/]:");
        foreach (var f in r.AuditFailures) AnsiConsole.MarkupLineInterpolated($"  [red]-[/] {f}");
    }
}
