using System.Text.Json;
using Allocators.Tests.Cli;

namespace Allocators.Tests.Traces;

/// <summary><c>allocators bench -w traces</c>: runs the simulators only, writes Traces.md, prints JSON when asked.</summary>
[Trait("Category", "Cli")]
public sealed class TraceCommandTests
{
    [Fact]
    public void BenchTracesWritesTheTableAndPrintsJson()
    {
        string dir = Path.Combine(Path.GetTempPath(), "allocators-traces-cli-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(120), "bench", "-w", "traces", "--pages", "64", "-o", dir, "--json");
            Assert.True(code == 0, stderr);
            using var doc = JsonDocument.Parse(stdout);
            var traces = doc.RootElement.GetProperty("traces");
            Assert.Equal(4, traces.GetArrayLength());
            Assert.Equal(["Allocators (reclaim + swap)", "LRU", "MIN"], traces[0].GetProperty("replays").EnumerateArray().Select(r => r.GetProperty("memory").GetString()));
            string markdown = File.ReadAllText(Path.Combine(dir, "Traces.md"));
            Assert.Contains("| loop | 64 |", markdown, StringComparison.Ordinal);
            Assert.Contains("| host mmap |", markdown, StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void BenchTracesRefusesTheAllocatorSuiteOptions()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "bench", "-w", "traces", "-a", "glibc");
        Assert.Equal(2, code);
        Assert.Contains("-w traces takes only", stdout + stderr, StringComparison.Ordinal);
    }
}
