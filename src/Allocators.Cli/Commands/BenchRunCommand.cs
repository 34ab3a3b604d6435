using System.ComponentModel;
using Allocators.Cli.Bench;
using Allocators.Workloads;
using Spectre.Console.Cli;

namespace Allocators.Cli.Commands;

/// <summary>
/// One isolated bench measurement (what <c>bench --isolate</c> starts per run): one measured run (cold: no warm-up) of a
/// workload on an allocator, its result written as one JSON line after <see cref="BenchIsolation.ResultPrefix"/>.
/// </summary>
internal sealed class BenchRunCommand : Command<BenchRunCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<WORKLOAD>")]
        [Description("Workload name.")]
        public string Workload { get; init; } = "";

        [CommandArgument(1, "<ALLOCATOR>")]
        [Description("Allocator name.")]
        public string Allocator { get; init; } = "";

        [CommandArgument(2, "<THREADS>")]
        [Description("Thread count.")]
        public int Threads { get; init; }

        [CommandArgument(3, "<SCALE>")]
        [Description("quick, full or tiny.")]
        public string Scale { get; init; } = "";
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var workload = WorkloadCatalog.Find(settings.Workload);
        var allocator = AllocatorUnderTest.All.FirstOrDefault(a => a.Name == settings.Allocator);
        var scale = BenchIsolation.ScaleNamed(settings.Scale);
        if (workload is null || allocator is null || scale is null || settings.Threads < 1 || !allocator.IsAvailable || !allocator.Supports(workload))
        {
            // Standard error: the parent keeps it as the reason (its standard output is for the result line).
            Console.Error.WriteLine($"cannot run {settings.Workload} ({(workload is null ? "unknown workload" : "known")}) on {settings.Allocator} ({allocator?.Status ?? "unknown allocator"}) with {settings.Threads} threads at scale {settings.Scale}");
            return ExitCodes.UsageError;
        }
        return BenchIsolation.RunHere(workload, allocator, settings.Threads, scale, Console.Out);
    }
}
