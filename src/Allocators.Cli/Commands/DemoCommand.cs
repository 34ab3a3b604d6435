using System.ComponentModel;
using Allocators.Cli.Output;
using Allocators.Cli.Workloads;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>What <c>allocators demo --json</c> prints.</summary>
internal sealed record DemoReport(int Threads, double Seconds, long Operations, long AllocationFailures, long StampErrors,
    bool FreeListsRestored, string InitialBuddyInfo, string FinalBuddyInfo, string ZoneInfo, string VmStat, string Meminfo);

/// <summary>The main job: builds the default memory system, runs a short mixed workload, prints statistics.</summary>
internal sealed class DemoCommand : Command<DemoCommand.Settings>
{
    public sealed class Settings : JsonSettings
    {
        [CommandOption("-t|--threads <N>")]
        [Description("Worker threads (default 0: the processor count, at least 2).")]
        public int Threads { get; init; }

        [CommandOption("-s|--seconds <S>")]
        [Description("Seconds the workload runs (default 2).")]
        public double Seconds { get; init; } = 2;

        public override ValidationResult Validate()
        {
            if (Threads is < 0 or > 1024) return ValidationResult.Error("--threads must be between 1 and 1024 (0: the processor count)");
            if (Seconds is <= 0 or > 86400 || double.IsNaN(Seconds)) return ValidationResult.Error("--seconds must be greater than 0 (and at most a day)");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        using var system = new MemorySystem();
        var pages = system.Pages;
        string initialBuddyInfo = pages.BuddyInfo();
        int threads = settings.Threads > 0 ? settings.Threads : Math.Max(2, Environment.ProcessorCount);
        var workload = new PageWorkload(pages, threads, TimeSpan.FromSeconds(settings.Seconds));
        if (settings.Json)
        {
            workload.Run();
            pages.DrainAllPages();
            string final = pages.BuddyInfo();
            bool same = final == initialBuddyInfo;
            JsonOutput.Write(new DemoReport(threads, settings.Seconds, workload.Operations, workload.Failures, workload.StampErrors, same,
                initialBuddyInfo, final, pages.ZoneInfo(), pages.VmStat(), system.Meminfo()), CliJsonContext.Default.DemoReport);
            return workload.StampErrors == 0 && same ? ExitCodes.Ok : ExitCodes.AuditFailed;
        }

        AnsiConsole.MarkupLine($"[bold]Allocators demo[/]: {system.Memory.PresentPages * 4 / 1024} MiB {system.Memory.Backing} arena, "
            + $"{pages.NodeCount} node(s), {threads} threads, {settings.Seconds:0.#} s mixed page workload with cross-thread frees");
        AnsiConsole.WriteLine();
        AnsiConsole.WriteLine("Initial /proc/buddyinfo:");
        Console.Out.Write(initialBuddyInfo);

        Progress.Run("Page workload", workload.Duration, () => workload.Run(), () => $"{workload.Operations:N0} ops");

        AnsiConsole.MarkupLine($"Operations: {workload.Operations:N0} ({workload.Operations / settings.Seconds / 1e6:0.00} M ops/s), "
            + $"allocation failures: {workload.Failures}, stamp errors: {workload.StampErrors}");
        pages.DrainAllPages();
        bool restored = pages.BuddyInfo() == initialBuddyInfo;
        AnsiConsole.WriteLine();
        AnsiConsole.WriteLine("/proc/buddyinfo after freeing everything and draining the per-thread lists:");
        Console.Out.Write(pages.BuddyInfo());
        AnsiConsole.MarkupLine(restored ? "[green]free lists identical to the start[/]" : "[red]free lists differ from the start[/]");
        AnsiConsole.WriteLine();
        AnsiConsole.WriteLine("/proc/zoneinfo:");
        Console.Out.Write(pages.ZoneInfo());
        AnsiConsole.WriteLine("/proc/vmstat:");
        Console.Out.Write(pages.VmStat());
        AnsiConsole.WriteLine("/proc/meminfo:");
        Console.Out.Write(system.Meminfo());
        AnsiConsole.WriteLine();
        AnsiConsole.MarkupLine("[bold]Software MMU[/]: a sparse 1 GiB mapping, demand faults, fork and copy-on-write");
        MmuDemo.Run(system, Console.Out);
        return workload.StampErrors == 0 && restored ? ExitCodes.Ok : ExitCodes.AuditFailed;
    }
}
