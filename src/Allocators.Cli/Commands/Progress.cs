using System.Diagnostics;
using Spectre.Console;

namespace Allocators.Cli.Commands;

/// <summary>Runs work on a background thread while showing a timed progress bar (plain lines when not interactive).</summary>
internal static class Progress
{
    public static void Run(string title, TimeSpan expected, Action work, Func<string> status)
    {
        var task = Task.Run(work);
        var clock = Stopwatch.StartNew();
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            while (!task.Wait(500)) AnsiConsole.WriteLine($"{title}: {clock.Elapsed.TotalSeconds:0.0}s {status()}");
            task.GetAwaiter().GetResult();
            return;
        }
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var bar = ctx.AddTask(title, maxValue: expected.TotalMilliseconds);
                while (!task.Wait(100))
                {
                    bar.Value = Math.Min(clock.Elapsed.TotalMilliseconds, expected.TotalMilliseconds);
                    bar.Description = $"{title} {status()}";
                }
                bar.Value = expected.TotalMilliseconds;
                bar.Description = $"{title} {status()}";
            });
        task.GetAwaiter().GetResult();
    }
}
