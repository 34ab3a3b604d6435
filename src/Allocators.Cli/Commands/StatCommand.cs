using System.ComponentModel;
using Allocators.Cli.Inspection;
using Allocators.Cli.Output;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>
/// What <c>allocators stat --json</c> prints: the files asked for (all by default), each as its /proc text and, where it
/// has one, its table; the files not asked for are left out.
/// </summary>
/// <param name="Files">The files in this document, in the order <c>stat</c> prints them.</param>
/// <param name="BuddyInfo">/proc/buddyinfo.</param>
/// <param name="Zones">Each zone's free blocks per order and basics (with buddyinfo or zoneinfo).</param>
/// <param name="ZoneInfo">/proc/zoneinfo.</param>
/// <param name="SlabInfo">/proc/slabinfo.</param>
/// <param name="Caches">Each slab cache's slabinfo columns (with slabinfo).</param>
/// <param name="VmallocInfo">/proc/vmallocinfo (absent when the library has no vmalloc layer).</param>
/// <param name="Meminfo">/proc/meminfo.</param>
/// <param name="MeminfoItems">The meminfo lines as numbers.</param>
/// <param name="VmStat">/proc/vmstat.</param>
/// <param name="VmStatItems">The vmstat counters as numbers.</param>
internal sealed record StatReport(
    IReadOnlyList<string> Files,
    string? BuddyInfo,
    IReadOnlyList<ZoneReport>? Zones,
    string? ZoneInfo,
    string? SlabInfo,
    IReadOnlyList<CacheReport>? Caches,
    string? VmallocInfo,
    string? Meminfo,
    IReadOnlyList<MeminfoItem>? MeminfoItems,
    string? VmStat,
    IReadOnlyList<VmStatItem>? VmStatItems);

/// <summary>One /proc/vmstat counter.</summary>
internal sealed record VmStatItem(string Name, long Value);

/// <summary>Prints the kernel-style statistics of a freshly built demo system.</summary>
internal sealed class StatCommand : Command<StatCommand.Settings>
{
    public static readonly string[] Files = ["buddyinfo", "zoneinfo", "slabinfo", "vmallocinfo", "meminfo", "vmstat"];

    public sealed class Settings : JsonSettings
    {
        [CommandArgument(0, "[FILES]")]
        [Description("Which /proc files to print: buddyinfo, zoneinfo, slabinfo, vmallocinfo, meminfo, vmstat (default: all). "
            + "vmallocinfo is printed only when the library has a vmalloc layer.")]
        public string[] Only { get; init; } = [];

        [CommandOption("--arena-mib <MIB>")]
        [Description("Size of the demo system's arena in MiB (default 256).")]
        public int ArenaMiB { get; init; } = 256;

        public override ValidationResult Validate()
        {
            foreach (string f in Only)
            {
                if (!Files.Contains(f, StringComparer.OrdinalIgnoreCase))
                    return ValidationResult.Error($"unknown file '{f}'; choose from {string.Join(", ", Files)}");
            }
            if (ArenaMiB is < 8 or > 65536) return ValidationResult.Error("--arena-mib must be between 8 and 65536");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        using var system = KernelBoot.Boot(settings.ArenaMiB);
        string? vmalloc = system.Vmalloc.VmallocInfo();
        bool Want(string file) => settings.Only.Length == 0 || settings.Only.Contains(file, StringComparer.OrdinalIgnoreCase);
        if (settings.Json)
        {
            JsonOutput.Write(Report(system, vmalloc, Want), CliJsonContext.Default.StatReport);
            return ExitCodes.Ok;
        }
        void Print(string file, string text)
        {
            AnsiConsole.WriteLine($"/proc/{file}:");
            Console.Out.Write(text);
        }
        if (Want("buddyinfo")) Print("buddyinfo", system.Pages.BuddyInfo());
        if (Want("zoneinfo")) Print("zoneinfo", system.Pages.ZoneInfo());
        if (Want("slabinfo")) Print("slabinfo", system.Slab.SlabInfo());
        if (Want("vmallocinfo"))
        {
            if (vmalloc is not null) Print("vmallocinfo", vmalloc);
            else if (settings.Only.Length > 0) AnsiConsole.MarkupLine("[yellow]vmallocinfo: this build of the library has no vmalloc layer[/]");
        }
        if (Want("meminfo")) Print("meminfo", system.Meminfo());
        if (Want("vmstat")) Print("vmstat", system.VmStat());
        return ExitCodes.Ok;
    }

    private static StatReport Report(MemorySystem system, string? vmalloc, Func<string, bool> want)
    {
        var live = LiveSystem.Report(system);
        string[] files = [.. Files.Where(f => want(f) && (f != "vmallocinfo" || vmalloc is not null))];
        bool Has(string file) => files.Contains(file);
        return new StatReport(
            files,
            Has("buddyinfo") ? live.BuddyInfo : null,
            Has("buddyinfo") || Has("zoneinfo") ? live.Zones : null,
            Has("zoneinfo") ? system.Pages.ZoneInfo() : null,
            Has("slabinfo") ? live.SlabInfo : null,
            Has("slabinfo") ? live.Caches : null,
            Has("vmallocinfo") ? vmalloc : null,
            Has("meminfo") ? live.MeminfoText : null,
            Has("meminfo") ? live.Meminfo : null,
            Has("vmstat") ? system.VmStat() : null,
            Has("vmstat") ? [.. system.VmStatItems().Select(i => new VmStatItem(i.Name, i.Value))] : null);
    }
}
