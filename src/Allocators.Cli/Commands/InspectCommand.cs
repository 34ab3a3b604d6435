using System.ComponentModel;
using System.Globalization;
using Allocators.Cli.Inspection;
using Allocators.Cli.Output;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>
/// Reads the memory systems of another .NET process (or of a core dump) without running anything in it, and prints
/// their buddyinfo, slabinfo and meminfo like /proc does for a kernel; <c>--leaks</c> adds a kmemleak-style scan.
/// </summary>
internal sealed class InspectCommand : Command<InspectCommand.Settings>
{
    public sealed class Settings : JsonSettings
    {
        // Text, not a number: a pid that does not parse is a target that does not exist (exit 3), not a usage error.
        [CommandArgument(0, "[PID]")]
        [Description("Id of a running .NET process that uses the Allocators library.")]
        public string? Pid { get; init; }

        [CommandOption("-d|--dump <FILE>")]
        [Description("Read a core dump (made with createdump, default or --full) instead of a live process.")]
        public string? Dump { get; init; }

        [CommandOption("-l|--leaks")]
        [Description("Also list the live objects of every StoreUser cache, grouped by allocation site (kmemleak-style).")]
        public bool Leaks { get; init; }

        [CommandOption("--system <ID>")]
        [Description("Only the memory system with this id (default: all).")]
        public int? System { get; init; }

        [CommandOption("--no-suspend")]
        [Description("Do not stop the process while reading it (faster, but the numbers may be torn).")]
        public bool NoSuspend { get; init; }

        [CommandOption("--dac <PATH>")]
        [Description("The runtime's libmscordaccore.so to use (default: the one next to the target's libcoreclr.so).")]
        public string? Dac { get; init; }

        public override ValidationResult Validate()
        {
            if (Pid is null == Dump is null) return ValidationResult.Error("give either a process id or --dump <FILE>, not both and not neither");
            if (Dump is not null && NoSuspend) return ValidationResult.Error("--no-suspend applies to live processes only");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        InspectReport report = settings.Dump is { } dump
            ? Inspector.InspectDump(dump, settings.Leaks, settings.System, settings.Dac)
            : Inspector.InspectProcess(ProcessId(settings.Pid!), settings.Leaks, settings.System, !settings.NoSuspend, settings.Dac);
        if (settings.Json)
        {
            JsonOutput.Write(report, CliJsonContext.Default.InspectReport);
        }
        else
        {
            Print(report);
        }
        if (settings.System is { } id && report.Systems.Count == 0) return ExitCodes.TargetError;
        return ExitCodes.Ok;
    }

    private static int ProcessId(string pid)
        => int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out int id) && id > 0
            ? id
            : throw new TargetException($"inspect: '{pid}' is not a process id");

    private static void Print(InspectReport report)
    {
        if (report.Systems.Count == 0)
        {
            AnsiConsole.WriteLine($"{report.Target}: no live memory system");
            return;
        }
        foreach (var s in report.Systems)
        {
            AnsiConsole.MarkupLineInterpolated($"[bold]{report.Target}, memory system {s.Id}[/]: {s.Nodes} node(s), {s.OnlineSections} section(s) online");
            AnsiConsole.WriteLine("/proc/buddyinfo:");
            Console.Out.Write(s.BuddyInfo);
            AnsiConsole.WriteLine("/proc/slabinfo:");
            Console.Out.Write(s.SlabInfo);
            if (s.VmallocInfo is { } vmallocInfo)
            {
                AnsiConsole.WriteLine("/proc/vmallocinfo:");
                Console.Out.Write(vmallocInfo);
            }
            AnsiConsole.WriteLine("/proc/meminfo:");
            Console.Out.Write(s.MeminfoText);
            if (s.Leaks is { } leaks) PrintLeaks(leaks);
            AnsiConsole.WriteLine();
        }
    }

    internal static void PrintLeaks(IReadOnlyList<CacheLeaks> leaks)
    {
        if (leaks.Count == 0)
        {
            AnsiConsole.WriteLine("leaks: no cache has SlabFlags.StoreUser, so no allocation sites are recorded");
            return;
        }
        foreach (var cache in leaks)
        {
            string quarantined = cache.QuarantinedObjects > 0
                ? string.Create(CultureInfo.InvariantCulture, $", {cache.QuarantinedObjects} freed in KASAN's quarantine")
                : "";
            AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"/sys/kernel/slab/{cache.Cache}/alloc_calls: {cache.LiveObjects} live object(s) of {cache.ObjectSize} bytes in {cache.Slabs} slab(s){quarantined}"));
            foreach (var site in cache.Sites)
            {
                Console.Out.Write(string.Create(CultureInfo.InvariantCulture,
                    $"{site.Count,7} {site.Site} bytes={site.Bytes} tids={site.Threads} cpus={site.Cpus}\n"));
            }
            foreach (var problem in cache.Problems) AnsiConsole.MarkupLineInterpolated($"[red]  problem: {problem}[/]");
        }
    }
}
