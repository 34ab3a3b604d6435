using System.Globalization;
using System.Text;

namespace Allocators.Workloads.Traces;

/// <summary>Markdown tables of the trace benchmark.</summary>
internal static class TraceTable
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Faults beyond MIN this many times over miss the reclaim issue's target.</summary>
    public const double TargetRatio = 1.5;

    /// <summary>
    /// One row per trace: memory pages, footprint, accesses, cold misses, then the faults of each memory under test,
    /// of LRU and of MIN, each with its ratio to MIN. Rows with different memories under test get the union of columns.
    /// </summary>
    public static string Faults(IReadOnlyList<TraceRow> rows)
    {
        var systems = rows.SelectMany(r => r.Systems.Select(s => s.Memory)).Distinct().ToList();
        var sb = new StringBuilder();
        var header = new List<string> { "trace", "memory pages", "footprint", "accesses", "cold misses" };
        header.AddRange(systems.Select(s => s + " faults"));
        header.AddRange(["LRU faults", "MIN faults"]);
        Row(sb, header);
        Row(sb, header.Select((_, i) => i == 0 ? "---" : "---:"));
        foreach (var r in rows)
        {
            var cells = new List<string>
            {
                r.Trace.Name, Num(r.MemoryPages), Num(r.Trace.Footprint), Num(r.Trace.Accesses.Length), Num(r.Trace.ColdMisses),
            };
            cells.AddRange(systems.Select(s => r.Systems.FirstOrDefault(x => x.Memory == s) is { } x ? WithRatio(r, x) : "-"));
            cells.Add(WithRatio(r, r.Lru));
            cells.Add(Num(r.Min.MajorFaults));
            Row(sb, cells);
        }
        sb.Append('\n');
        foreach (var r in rows) sb.Append(Inv, $"- {r.Trace.Name}: {r.Trace.Description}.\n");
        foreach (string s in systems) sb.Append(Verdict(rows, s));
        return sb.ToString();
    }

    /// <summary>Whether <paramref name="system"/> met the issue's targets: at most 1.5x MIN everywhere, fewer than LRU on the loop.</summary>
    public static string Verdict(IReadOnlyList<TraceRow> rows, string system)
    {
        var worst = rows.Select(r => (r, x: r.Systems.FirstOrDefault(s => s.Memory == system))).Where(p => p.x is not null).ToList();
        if (worst.Count == 0) return "";
        bool ratioMet = worst.All(p => p.r.RatioToMin(p.x!) <= TargetRatio);
        var loop = worst.FirstOrDefault(p => p.r.Trace.Name == "loop");
        string loopPart = loop.x is null ? "no loop trace" : loop.x.MajorFaults < loop.r.Lru.MajorFaults ? "beats LRU on the loop" : "does not beat LRU on the loop";
        return string.Create(Inv, $"- {system}: {(ratioMet ? "within" : "NOT within")} {TargetRatio}x MIN on every trace, {loopPart}.\n");
    }

    /// <summary>
    /// Throughput of the same random working set on each memory: accesses, major faults (pages in), and per second
    /// both the accesses and the pages in.
    /// </summary>
    public static string Throughput(IReadOnlyList<ReplayResult> results, int memoryPages, int footprint)
    {
        var sb = new StringBuilder();
        sb.Append(Inv, $"Random access over {Num(footprint)} pages with {Num(memoryPages)} pages of memory.\n\n");
        string[] header = ["memory", "accesses", "major faults", "accesses/s", "pages in/s", "pages out/s", "seconds"];
        Row(sb, header);
        Row(sb, header.Select((_, i) => i == 0 ? "---" : "---:"));
        foreach (var r in results)
        {
            double seconds = r.Elapsed.TotalSeconds;
            Row(sb, [r.Memory, Num(r.Accesses), Num(r.MajorFaults), Rate(r.AccessesPerSecond),
                Rate(seconds > 0 ? r.MajorFaults / seconds : 0), Rate(seconds > 0 ? r.PagesOut / seconds : 0), seconds.ToString("0.000", Inv)]);
        }
        return sb.ToString();
    }

    private static string WithRatio(TraceRow row, ReplayResult result)
        => string.Create(Inv, $"{Num(result.MajorFaults)} ({row.RatioToMin(result):0.00}x)");

    private static string Num(long n) => n.ToString("N0", Inv);

    private static string Rate(double perSecond) => perSecond switch
    {
        >= 1e6 => (perSecond / 1e6).ToString("0.0", Inv) + " M",
        >= 1e3 => (perSecond / 1e3).ToString("0", Inv) + " k",
        _ => perSecond.ToString("0", Inv),
    };

    private static void Row(StringBuilder sb, IEnumerable<string> cells)
        => sb.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
}
