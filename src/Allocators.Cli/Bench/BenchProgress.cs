using System.Globalization;
using Spectre.Console;
using Allocators.Workloads;

namespace Allocators.Cli.Bench;

/// <summary>Runs a plan on a background thread with a progress bar (plain lines when the console is not interactive).</summary>
internal static class BenchProgress
{
    /// <summary>Runs everything and returns the results.</summary>
    public static List<BenchResult> Run(BenchRunner runner, BenchPlan plan, CancellationToken cancel)
    {
        string current = "starting";
        int done = 0;
        runner.RunStarting += (index, total, workload, allocator, threads) =>
            Volatile.Write(ref current, string.Create(CultureInfo.InvariantCulture, $"[{index + 1}/{total}] {workload} on {allocator}, {threads} thread(s)"));
        runner.RunFinished += _ => Interlocked.Increment(ref done);

        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            runner.RunFinished += r => AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Workload,-14} {r.Allocator,-23} {r.Threads,3} thr {BenchReport.FormatRate(r.OpsPerSecond),9} ops/s  rss +{r.RssGrowthBytes / 1048576.0,7:0.0} MiB{(r.Verified ? "" : "  FAILED: " + r.Detail)}"));
            return runner.Run(cancel);
        }

        var task = Task.Run(() => runner.Run(cancel), cancel);
        AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var bar = ctx.AddTask("bench", maxValue: Math.Max(1, plan.TotalRuns));
                while (!task.Wait(100))
                {
                    bar.Value = Volatile.Read(ref done);
                    bar.Description = Markup.Escape(Volatile.Read(ref current));
                }
                bar.Value = bar.MaxValue;
            });
        return task.GetAwaiter().GetResult();
    }
}
