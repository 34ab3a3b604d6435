using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>Prints the kernel-style statistics of a freshly built demo system.</summary>
internal sealed class StatCommand : Command
{
    public override int Execute(CommandContext context, CancellationToken cancellationToken)
    {
        using var system = new MemorySystem();
        AnsiConsole.WriteLine("/proc/buddyinfo:");
        Console.Out.Write(system.Pages.BuddyInfo());
        AnsiConsole.WriteLine("/proc/zoneinfo:");
        Console.Out.Write(system.Pages.ZoneInfo());
        AnsiConsole.WriteLine("/proc/vmstat:");
        Console.Out.Write(system.Pages.VmStat());
        return 0;
    }
}
