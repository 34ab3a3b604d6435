using System.ComponentModel;
using Allocators.Cli.Inspection;
using Allocators.Cli.Output;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>What <c>allocators stat --json</c> prints.</summary>
internal sealed record StatReport(SystemReport System, string ZoneInfo, string VmStat, IReadOnlyList<VmStatItem> VmStatItems, string? VmallocInfo);

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
        if (settings.Json)
        {
            var items = system.Pages.VmStatItems().Select(i => new VmStatItem(i.Name, i.Value)).ToArray();
            JsonOutput.Write(new StatReport(LiveSystem.Report(system), system.Pages.ZoneInfo(), system.Pages.VmStat(), items, vmalloc),
                CliJsonContext.Default.StatReport);
            return ExitCodes.Ok;
        }
        bool Want(string file) => settings.Only.Length == 0 || settings.Only.Contains(file, StringComparer.OrdinalIgnoreCase);
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
        if (Want("vmstat")) Print("vmstat", system.Pages.VmStat());
        return ExitCodes.Ok;
    }
}
