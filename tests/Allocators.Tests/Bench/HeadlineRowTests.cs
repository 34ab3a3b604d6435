using System.Text.Json;
using Allocators.Cli.Bench;
using Allocators.Workloads;
using Allocators.Tests.Cli;

namespace Allocators.Tests.Bench;

/// <summary>
/// The headline Allocators rows (allocators, allocators-cache) run every workload through the plain calls a program
/// makes; the per-thread handles are only taken by the extra rows, which count every handle they take.
/// </summary>
public sealed class HeadlineRowTests
{
    public static TheoryData<string> Workloads() => [.. WorkloadCatalog.All.Select(w => w.Name)];

    [Theory]
    [MemberData(nameof(Workloads))]
    public void TheHeadlineRowsTakeNoThreadHandleAndTheExtraRowsDo(string workloadName)
    {
        var workload = WorkloadCatalog.Find(workloadName)!;
        (string Plain, string Handle)[] rows = workload.HasTypedCache
            ? [("allocators", "allocators-handle"), ("allocators-cache", "allocators-cache-handle")]
            : [("allocators", "allocators-handle")];
        foreach (var (plain, handle) in rows)
        {
            Assert.Equal(0, HandlesTakenBy(plain, workload));
            Assert.True(HandlesTakenBy(handle, workload) > 0, $"{handle} ran {workloadName} without taking a thread handle");
        }
    }

    private static long HandlesTakenBy(string allocatorName, Workload workload)
    {
        var allocator = AllocatorUnderTest.All.Single(a => a.Name == allocatorName);
        using var session = allocator.Open();
        var outcome = session.Run(workload, new RunContext(2, BenchScale.Tiny));
        session.Verify(outcome);
        Assert.True(outcome.Verified, $"{workload.Name} on {allocatorName}: {outcome.Detail}");
        return session.ThreadHandlesTaken;
    }

    [Fact]
    public void TargetsJudgeThePlainRowsOnly()
    {
        BenchResult Result(string allocator, double opsPerSecond)
            => new("larson", allocator, 2, (long)opsPerSecond, TimeSpan.FromSeconds(1), 100 << 20, 90 << 20, 4 << 20, 5 << 20, true, null);
        var allocators = AllocatorUnderTest.All.Where(a => a.Name is "allocators" or "allocators-handle" or "glibc" or "mimalloc").ToList();
        var plan = new BenchPlan([WorkloadCatalog.Find("larson")!], allocators, [2], BenchScale.Full);
        var machine = new MachineInfo("test CPU", 2, 1L << 30, "test OS", ".NET test", DateTime.UnixEpoch, []);
        var report = new BenchReport(plan, [Result("glibc", 10e6), Result("mimalloc", 18e6), Result("allocators", 12e6), Result("allocators-handle", 40e6)], machine, TimeSpan.FromSeconds(3));

        var larson = report.Targets().Single(t => t.Name.StartsWith("larson at 2 threads", StringComparison.Ordinal));

        // The handle row's 4x would meet it; the plain row's 1.2x does not.
        Assert.False(larson.Met);
        Assert.Contains("allocators >=", larson.Name, StringComparison.Ordinal);
        Assert.DoesNotContain(report.Targets(), t => t.Name.Contains("handle", StringComparison.Ordinal));
    }

    [Fact]
    public void BenchJsonPrintsOneJsonDocument()
    {
        string dir = Path.Combine(Path.GetTempPath(), "bench-json-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (exit, stdout, stderr) = CliRunner.Run(TimeSpan.FromMinutes(3),
                "bench", "--json", "--quick", "--no-reexec", "-w", "glibc-simple", "-a", "glibc", "-t", "1", "-o", dir);

            Assert.True(exit == 0, $"exit {exit}: {stderr}");
            using var document = JsonDocument.Parse(stdout);
            var root = document.RootElement;
            Assert.Equal("quick", root.GetProperty("mode").GetString());
            var result = root.GetProperty("results").EnumerateArray().Single();
            Assert.Equal("glibc-simple", result.GetProperty("workload").GetString());
            Assert.Equal("glibc", result.GetProperty("allocator").GetString());
            Assert.True(result.GetProperty("verified").GetBoolean());
            Assert.True(result.GetProperty("operations").GetInt64() > 0);
            Assert.Contains("glibc-simple", root.GetProperty("workloads")[0].GetProperty("description").GetString(), StringComparison.Ordinal);
            // The human-readable tables went to standard error.
            Assert.Contains("glibc-simple", stderr, StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
