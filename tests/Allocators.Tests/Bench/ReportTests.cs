using Allocators.Cli.Bench;
using Allocators.Workloads;

namespace Allocators.Tests.Bench;

/// <summary>The report computes ratios against glibc, judges targets and writes its files.</summary>
public sealed class ReportTests
{
    private static BenchResult Result(string workload, string allocator, int threads, double opsPerSecond, long? footprint = null, long live = 4 << 20)
        => new(workload, allocator, threads, (long)opsPerSecond, TimeSpan.FromSeconds(1), 100 << 20, 90 << 20, live, footprint, true, null);

    private static BenchReport Report(params BenchResult[] results) => Report(isolated: false, results);

    private static BenchReport Report(bool isolated, params BenchResult[] results)
    {
        var allocators = AllocatorUnderTest.All.Where(a => a.Name is "allocators" or "glibc" or "mimalloc").ToList();
        var plan = new BenchPlan([WorkloadCatalog.Find("larson")!], allocators, [1, 2], BenchScale.Quick, isolated);
        var machine = new MachineInfo("test CPU", 2, 1L << 30, "test OS", ".NET test", DateTime.UnixEpoch, []);
        return new BenchReport(plan, results, machine, TimeSpan.FromSeconds(3));
    }

    [Fact]
    public void RatiosAreAgainstGlibcAtTheSameThreadCount()
    {
        var report = Report(Result("larson", "glibc", 2, 10e6), Result("larson", "allocators", 2, 25e6), Result("larson", "allocators", 1, 5e6));
        Assert.Equal(2.5, report.Ratio(report.Find("larson", "allocators", 2)!)!.Value, 3);
        Assert.Null(report.Ratio(report.Find("larson", "allocators", 1)!));
    }

    [Fact]
    public void LarsonTargetsAreJudgedAtTwoThreads()
    {
        var report = Report(
            Result("larson", "glibc", 2, 10e6),
            Result("larson", "mimalloc", 2, 18e6),
            Result("larson", "allocators", 2, 21e6, footprint: 5 << 20, live: 4 << 20));
        var targets = report.Targets();
        Assert.True(targets.Single(t => t.Name.StartsWith("larson at 2 threads", StringComparison.Ordinal)).Met);
        Assert.True(targets.Single(t => t.Name.StartsWith("larson peak footprint", StringComparison.Ordinal)).Met);
    }

    [Fact]
    public void WritesMarkdownReportAndSnippet()
    {
        var report = Report(Result("larson", "glibc", 1, 10e6), Result("larson", "allocators", 1, 12e6, footprint: 6 << 20));
        string dir = Path.Combine(Path.GetTempPath(), "bench-report-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            report.WriteFiles(dir);
            string md = File.ReadAllText(Path.Combine(dir, "bench-quick.md"));
            Assert.Contains("| allocators | 12.0 M (1.20x)", md, StringComparison.Ordinal);
            Assert.Contains("test CPU", md, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(dir, "README-snippet.md")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void AnIsolatedReportShowsTheNativeFootprintsAndComparesThemInTheTarget()
    {
        var report = Report(isolated: true,
            Result("larson", "glibc", 1, 10e6, footprint: 20 << 20),
            Result("larson", "allocators", 1, 12e6, footprint: 6 << 20));
        var target = report.Targets().Single(t => t.Name.StartsWith("larson peak footprint", StringComparison.Ordinal));
        Assert.Contains("glibc 5.00x / -", target.Evidence, StringComparison.Ordinal);
        string md = report.Markdown([], "");
        Assert.Contains("fresh process", md, StringComparison.Ordinal);
        Assert.Contains("| glibc | 10.0 M (1.00x) | - |", md, StringComparison.Ordinal);
        Assert.Contains("| 5.00 / - |", md, StringComparison.Ordinal);
    }
}
