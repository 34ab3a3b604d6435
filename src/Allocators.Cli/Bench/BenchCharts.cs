using System.Globalization;
using Allocators.Workloads;

namespace Allocators.Cli.Bench;

/// <summary>SVG charts of a bench run: throughput vs threads per workload, and RSS growth per allocator.</summary>
internal static class BenchCharts
{
    /// <summary>Writes the charts into <paramref name="directory"/>; returns their file names.</summary>
    public static IReadOnlyList<string> Write(BenchReport report, BenchPlan plan, string directory)
    {
        var colors = plan.Allocators.Select((a, i) => (a.Name, Color: SvgChart.Color(i))).ToDictionary(x => x.Name, x => x.Color);
        var files = new List<string>();
        foreach (var workload in plan.Workloads)
        {
            if (ThroughputChart(report, plan, workload, colors) is not { } chart) continue;
            string file = $"{plan.Scale.Name}-{workload.Name}.svg";
            File.WriteAllText(Path.Combine(directory, file), chart.Render());
            files.Add(file);
        }
        if (RssChart(report, plan, colors) is { } rss)
        {
            string file = $"{plan.Scale.Name}-rss.svg";
            File.WriteAllText(Path.Combine(directory, file), rss.Render());
            files.Add(file);
        }
        return files;
    }

    /// <summary>Million operations per second against threads, one line per allocator; null when nothing verified.</summary>
    internal static SvgChart? ThroughputChart(BenchReport report, BenchPlan plan, Workload workload, IReadOnlyDictionary<string, string> colors)
    {
        var lines = plan.Allocators
            .Select(a => (a.Name, Points: plan.ThreadCounts
                .Select(t => report.Find(workload.Name, a.Name, t))
                .Where(r => r is { Verified: true })
                .Select(r => (X: (double)r!.Threads, Y: r.OpsPerSecond / 1e6))
                .ToList()))
            .Where(l => l.Points.Count > 0)
            .ToList();
        if (lines.Count == 0) return null;
        double max = lines.Max(l => l.Points.Max(p => p.Y));
        var chart = new SvgChart(1000, 520)
        {
            Title = $"{workload.Name}: throughput vs threads ({plan.Scale.Name})",
            XLabel = "threads",
            YLabel = $"million {workload.Unit}",
            X = (plan.ThreadCounts.Min() - 0.3, plan.ThreadCounts.Max() + 0.3),
            YMax = max * 1.15,
            XTicks = [.. plan.ThreadCounts.Select(t => ((double)t, t.ToString(CultureInfo.InvariantCulture)))],
        };
        foreach (var (name, points) in lines)
            chart.AddLine(name, colors[name], points, name.StartsWith("allocators", StringComparison.Ordinal) ? 3 : 1.5);
        return chart;
    }

    /// <summary>Peak RSS growth per workload at the target thread count, one bar per allocator; null when nothing ran.</summary>
    internal static SvgChart? RssChart(BenchReport report, BenchPlan plan, IReadOnlyDictionary<string, string> colors)
    {
        int threads = report.TargetThreads;
        var allocators = plan.Allocators.Where(a => report.Results.Any(r => r.Allocator == a.Name)).ToList();
        double width = 0.8 / Math.Max(1, allocators.Count);
        var bars = new List<(double X, double Value, string Color)>();
        for (int w = 0; w < plan.Workloads.Count; w++)
        {
            for (int a = 0; a < allocators.Count; a++)
            {
                if (report.Find(plan.Workloads[w].Name, allocators[a].Name, threads) is not { } r) continue;
                bars.Add((w - 0.4 + width * (a + 0.5), r.RssGrowthBytes / 1048576.0, colors[allocators[a].Name]));
            }
        }
        if (bars.Count == 0) return null;
        var chart = new SvgChart(1400, 560)
        {
            Title = $"Peak RSS growth per allocator at {threads} threads ({plan.Scale.Name})",
            YLabel = "MiB above the resident set before the run",
            X = (-0.5, plan.Workloads.Count - 0.5),
            YMax = Math.Max(1, bars.Max(b => b.Value)) * 1.1,
            XTicks = [.. plan.Workloads.Select((w, i) => ((double)i, w.Name))],
        };
        foreach (var (x, value, color) in bars) chart.AddBar(x, width * 0.9, value, color);
        foreach (var a in allocators) chart.AddLegend(a.Name, colors[a.Name]);
        return chart;
    }
}
