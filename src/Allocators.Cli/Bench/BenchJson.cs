using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Allocators.Workloads;

namespace Allocators.Cli.Bench;

/// <summary>What <c>bench --json</c> prints: the plan, every run's numbers and the targets, as one document.</summary>
/// <param name="Mode">quick or full.</param>
/// <param name="Share">How much of each published run the mode runs.</param>
/// <param name="TreeDepth">binary-trees depth.</param>
/// <param name="Threads">Thread counts run.</param>
/// <param name="Isolated">True when every run had its own process.</param>
/// <param name="Machine">The machine in one line.</param>
/// <param name="WallSeconds">Length of the whole suite.</param>
/// <param name="ReportDirectory">Where the markdown report and charts went.</param>
/// <param name="Workloads">The workloads run.</param>
/// <param name="Allocators">The allocators named, run or skipped.</param>
/// <param name="Results">One entry per (workload, allocator, threads).</param>
/// <param name="Targets">The targets and how this run did.</param>
internal sealed record BenchJsonReport(
    string Mode,
    string Share,
    int TreeDepth,
    IReadOnlyList<int> Threads,
    bool Isolated,
    string Machine,
    double WallSeconds,
    string? ReportDirectory,
    IReadOnlyList<BenchJsonWorkload> Workloads,
    IReadOnlyList<BenchJsonAllocator> Allocators,
    IReadOnlyList<BenchJsonResult> Results,
    IReadOnlyList<BenchReport.Target> Targets);

/// <summary>A workload of the suite.</summary>
/// <param name="Name">Its name.</param>
/// <param name="Description">What it runs, at which published parameters.</param>
/// <param name="Unit">Throughput unit.</param>
internal sealed record BenchJsonWorkload(string Name, string Description, string Unit);

/// <summary>An allocator of the suite.</summary>
/// <param name="Name">Its row name.</param>
/// <param name="Description">What it calls.</param>
/// <param name="Available">False when it was skipped.</param>
/// <param name="Status">"available", or why it was skipped.</param>
internal sealed record BenchJsonAllocator(string Name, string Description, bool Available, string Status);

/// <summary>One measured run.</summary>
/// <param name="Workload">Workload name.</param>
/// <param name="Allocator">Allocator name.</param>
/// <param name="Threads">Thread count.</param>
/// <param name="Operations">Operations done (the workload's unit).</param>
/// <param name="ElapsedSeconds">Timed region.</param>
/// <param name="OpsPerSecond">Throughput.</param>
/// <param name="RatioToGlibc">Throughput over glibc's at the same thread count, when both ran and verified.</param>
/// <param name="RssGrowthBytes">Peak resident set growth.</param>
/// <param name="PeakLiveBytes">Peak of the bytes the workload held.</param>
/// <param name="PeakFootprintBytes">Peak of what the allocator held, where it can say.</param>
/// <param name="Verified">False when the workload's checks failed.</param>
/// <param name="Detail">Why it failed, or a remark.</param>
internal sealed record BenchJsonResult(
    string Workload,
    string Allocator,
    int Threads,
    long Operations,
    double ElapsedSeconds,
    double OpsPerSecond,
    double? RatioToGlibc,
    long RssGrowthBytes,
    long PeakLiveBytes,
    long? PeakFootprintBytes,
    bool Verified,
    string? Detail);

/// <summary>Source-generated serialisation of <see cref="BenchJsonReport"/>, with the CLI's other documents' conventions.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(BenchJsonReport))]
internal sealed partial class BenchJsonContext : JsonSerializerContext;

/// <summary>Builds and prints the <c>--json</c> document.</summary>
internal static class BenchJson
{
    // Descriptions hold '<' and '>' (KmemCache<T>): nothing here is embedded in HTML, so they stay readable.
    private static readonly JsonSerializerOptions Options = new(BenchJsonContext.Default.Options) { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The document for <paramref name="report"/>.</summary>
    public static BenchJsonReport Build(BenchReport report, BenchPlan plan, MachineInfo machine, TimeSpan wallTime, string? directory)
        => new(
            plan.Scale.Name,
            plan.Scale.Share,
            plan.Scale.TreeDepth,
            plan.ThreadCounts,
            plan.Isolated,
            machine.OneLine,
            wallTime.TotalSeconds,
            directory,
            [.. plan.Workloads.Select(w => new BenchJsonWorkload(w.Name, w.Description, w.Unit))],
            [.. plan.Allocators.Select(a => new BenchJsonAllocator(a.Name, a.Description, a.IsAvailable, a.Status))],
            [.. report.Results.Select(r => new BenchJsonResult(r.Workload, r.Allocator, r.Threads, r.Operations, r.Elapsed.TotalSeconds,
                r.OpsPerSecond, report.Ratio(r), r.RssGrowthBytes, r.PeakLiveBytes, r.PeakFootprintBytes, r.Verified, r.Detail))],
            report.Targets());

    /// <summary>The document as text.</summary>
    public static string Serialize(BenchJsonReport document)
        => JsonSerializer.Serialize(document, (System.Text.Json.Serialization.Metadata.JsonTypeInfo<BenchJsonReport>)Options.GetTypeInfo(typeof(BenchJsonReport)));

    /// <summary>Prints the document on standard output (the only thing that goes there in <c>--json</c> mode).</summary>
    public static void Write(BenchJsonReport document)
    {
        Console.Out.Write(Serialize(document));
        Console.Out.Write('\n');
        Console.Out.Flush();
    }
}
