using ScottPlot;

namespace Allocators.Cli.Bench;

/// <summary>PNG charts of a bench run (ScottPlot): throughput vs threads per workload, and RSS growth per allocator.</summary>
internal static class BenchCharts
{
    /// <summary>Writes the charts into <paramref name="directory"/>; returns their file names (empty when rendering is impossible here).</summary>
    public static IReadOnlyList<string> Write(BenchReport report, BenchPlan plan, string directory)
    {
        var files = new List<string>();
        try
        {
            var palette = new ScottPlot.Palettes.Category10();
            var colors = plan.Allocators.Select((a, i) => (a.Name, Color: palette.GetColor(i))).ToDictionary(x => x.Name, x => x.Color);
            foreach (var workload in plan.Workloads)
            {
                string file = $"{plan.Scale.Name}-{workload.Name}.png";
                if (ThroughputChart(report, plan, workload, colors, Path.Combine(directory, file))) files.Add(file);
            }
            string rss = $"{plan.Scale.Name}-rss.png";
            if (RssChart(report, plan, colors, Path.Combine(directory, rss))) files.Add(rss);
        }
        catch (Exception ex) when (ex is TypeInitializationException or DllNotFoundException or InvalidOperationException)
        {
            Spectre.Console.AnsiConsole.MarkupLineInterpolated($"[yellow]charts skipped: {ex.Message}[/]");
        }
        return files;
    }

    private static bool ThroughputChart(BenchReport report, BenchPlan plan, Workload workload, Dictionary<string, Color> colors, string path)
    {
        var plot = new Plot();
        double max = 0;
        bool any = false;
        double[] xs = plan.ThreadCounts.Select(t => (double)t).ToArray();
        foreach (var allocator in plan.Allocators)
        {
            var points = plan.ThreadCounts
                .Select(t => report.Find(workload.Name, allocator.Name, t))
                .Where(r => r is { Verified: true })
                .Select(r => (X: (double)r!.Threads, Y: r.OpsPerSecond / 1e6))
                .ToList();
            if (points.Count == 0) continue;
            any = true;
            var line = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray());
            line.LegendText = allocator.Name;
            line.Color = colors[allocator.Name];
            line.LineWidth = allocator.Name.StartsWith("allocators", StringComparison.Ordinal) ? 3 : 1.5f;
            line.MarkerSize = 7;
            max = Math.Max(max, points.Max(p => p.Y));
        }
        if (!any) return false;
        plot.Title($"{workload.Name}: throughput vs threads ({plan.Scale.Name})");
        plot.XLabel("threads");
        plot.YLabel($"million {workload.Unit}");
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xs, plan.ThreadCounts.Select(t => t.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.SetLimits(xs.Min() - 0.3, xs.Max() + 0.3, 0, max * 1.15);
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, 1000, 520);
        return true;
    }

    private static bool RssChart(BenchReport report, BenchPlan plan, Dictionary<string, Color> colors, string path)
    {
        int threads = report.TargetThreads;
        var plot = new Plot();
        var bars = new List<Bar>();
        var allocators = plan.Allocators.Where(a => report.Results.Any(r => r.Allocator == a.Name)).ToList();
        int n = allocators.Count;
        double width = 0.8 / Math.Max(1, n);
        var positions = new List<double>();
        var labels = new List<string>();
        for (int w = 0; w < plan.Workloads.Count; w++)
        {
            positions.Add(w);
            labels.Add(plan.Workloads[w].Name);
            for (int a = 0; a < n; a++)
            {
                var r = report.Find(plan.Workloads[w].Name, allocators[a].Name, threads);
                if (r is null) continue;
                bars.Add(new Bar
                {
                    Position = w - 0.4 + width * (a + 0.5),
                    Value = r.RssGrowthBytes / 1048576.0,
                    FillColor = colors[allocators[a].Name],
                    Size = width * 0.9,
                });
            }
        }
        if (bars.Count == 0) return false;
        plot.Add.Bars(bars);
        foreach (var a in allocators) plot.Legend.ManualItems.Add(new LegendItem { LabelText = a.Name, FillColor = colors[a.Name] });
        plot.Title($"Peak RSS growth per allocator at {threads} threads ({plan.Scale.Name})");
        plot.YLabel("MiB above the resident set before the run");
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(positions.ToArray(), labels.ToArray());
        plot.Axes.Margins(bottom: 0);
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, 1400, 560);
        return true;
    }
}
