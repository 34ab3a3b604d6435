using System.Diagnostics;
using System.Text.Json;
using Allocators.Cli.Commands;
using Allocators.Cli.Inspection;
using Allocators.Cli.Output;
using Xunit.Abstractions;

namespace Allocators.Tests.Cli;

/// <summary>
/// <c>allocators inspect</c> against a child process that built a known state and reported it itself: live (ptrace
/// attach through ClrMD) and from a createdump core file. The tests run as root, so attaching is allowed.
/// </summary>
[Trait("Category", "Inspect")]
public sealed class InspectTests(SelftestTargetFixture target, ITestOutputHelper output) : IClassFixture<SelftestTargetFixture>
{
    private SelftestReport Self => target.Report ?? throw new InvalidOperationException("the target reported nothing");

    [Fact]
    public void LiveInspectionMatchesWhatTheTargetReportsItself()
    {
        // The attach runs in a CLI process with a deadline: a ptrace attach that stalls must fail the test, not hang the run.
        var clock = Stopwatch.StartNew();
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", target.Pid.ToString(), "--leaks", "--json");
        output.WriteLine($"target start {target.StartupTime.TotalMilliseconds:0} ms, inspect {clock.ElapsedMilliseconds} ms {stderr}");
        Assert.Equal(0, code);
        AssertMatchesSelf(JsonSerializer.Deserialize(stdout, CliJsonContext.Default.InspectReport)!);
    }

    [Fact]
    public void DumpInspectionMatchesWhatTheTargetReportsItself()
    {
        string dump = Path.Combine(Path.GetTempPath(), $"allocators-test-{Guid.NewGuid():N}.core");
        try
        {
            var clock = Stopwatch.StartNew();
            CreateDump(target.Pid, dump, "--full");
            long size = new FileInfo(dump).Length;
            long dumpMs = clock.ElapsedMilliseconds;
            InspectReport report = Inspector.InspectDump(dump, leaks: true);
            output.WriteLine($"createdump --full {dumpMs} ms ({size >> 20} MiB), inspect {clock.ElapsedMilliseconds - dumpMs} ms");
            Assert.StartsWith("dump ", report.Target);
            AssertMatchesSelf(report);
        }
        finally
        {
            File.Delete(dump);
        }
    }

    [Fact]
    public void TriageDumpWithoutStaticsFailsWithAClearMessage()
    {
        string dump = Path.Combine(Path.GetTempPath(), $"allocators-test-{Guid.NewGuid():N}.core");
        try
        {
            CreateDump(target.Pid, dump, "--triage");
            var e = Assert.Throws<TargetException>(() => Inspector.InspectDump(dump, leaks: false));
            output.WriteLine(e.Message);
            Assert.Contains("createdump", e.Message);
        }
        finally
        {
            File.Delete(dump);
        }
    }

    [Fact]
    public void TruncatedDumpIsATargetErrorOnOneLine()
    {
        string dump = Path.Combine(Path.GetTempPath(), $"allocators-test-{Guid.NewGuid():N}.core");
        try
        {
            CreateDump(target.Pid, dump, "--full");
            long size = new FileInfo(dump).Length;
            // Cut in the memory segments (the headers are whole) and in the program headers.
            foreach (long length in new[] { size / 2, 4096 })
            {
                using (var file = new FileStream(dump, FileMode.Open, FileAccess.Write)) file.SetLength(length);
                Assert.Contains("truncated", InspectTargetErrorTests.RefusedDumpLine(dump, output));
            }
        }
        finally
        {
            File.Delete(dump);
        }
    }

    [Fact]
    public void CliPrintsJsonWithLeaksAndExitsZero()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", target.Pid.ToString(), "--leaks", "--json");
        output.WriteLine(stderr);
        Assert.Equal(0, code);
        var report = JsonSerializer.Deserialize(stdout, CliJsonContext.Default.InspectReport)!;
        AssertMatchesSelf(report);
    }

    [Fact]
    public void CliHumanOutputShowsProcFiles()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", target.Pid.ToString(), "--leaks");
        output.WriteLine(stdout);
        Assert.Equal(0, code);
        Assert.Contains(Self.BuddyInfo, stdout);
        Assert.Contains(Self.SlabInfo, stdout);
        Assert.Contains(Self.Meminfo, stdout);
        Assert.Contains("/proc/vmallocinfo:\n" + Self.VmallocInfo, stdout);
        Assert.Contains("/sys/kernel/slab/selftest-tracked/alloc_calls", stdout);
        Assert.Contains("SelftestTargetCommand.AllocateBuffers", stdout);
    }

    private void AssertMatchesSelf(InspectReport report)
    {
        var system = Assert.Single(report.Systems);
        Assert.Equal(Self.SystemId, system.Id);
        output.WriteLine(system.BuddyInfo + system.SlabInfo + system.MeminfoText);
        Assert.Equal(Self.BuddyInfo, system.BuddyInfo);
        Assert.Equal(Self.SlabInfo, system.SlabInfo);
        Assert.Equal(Self.Meminfo, system.MeminfoText);
        Assert.True(system.VmallocPresent);
        Assert.Equal(Self.VmallocInfo, system.VmallocInfo);
        // The known state: vmalloc, vzalloc, an unpurged vfree'd area, vmap and vm_map_ram, per-CPU memory.
        Assert.Contains(" pages=4 vmalloc N0=4\n", Self.VmallocInfo);
        Assert.Contains(" pages=16 vmalloc N0=16\n", Self.VmallocInfo);
        Assert.Contains(" unpurged vm_area\n", Self.VmallocInfo);
        Assert.Contains(" pages=4 vmap\n", Self.VmallocInfo);
        Assert.Contains(" vm_map_ram\n", Self.VmallocInfo);
        Assert.Contains(system.Meminfo, i => i.Name == "Percpu" && i.Kb > 0);

        Assert.NotNull(system.Leaks);
        var found = system.Leaks!
            .SelectMany(c => c.Sites.Select(s => (c.Cache, s.Site, s.Count)))
            .OrderBy(x => x.Cache, StringComparer.Ordinal).ThenBy(x => x.Site, StringComparer.Ordinal).ToArray();
        var expected = Self.Leaks
            .Select(l => (l.Cache, l.Site, l.Count))
            .OrderBy(x => x.Cache, StringComparer.Ordinal).ThenBy(x => x.Site, StringComparer.Ordinal).ToArray();
        foreach (var f in found) output.WriteLine($"{f.Cache} {f.Site} {f.Count}");
        Assert.Equal(expected, found);
        Assert.All(system.Leaks!, c => Assert.Empty(c.Problems));
        // The known state: three sites in two StoreUser caches, a quarter of the buffers and half the requests freed.
        Assert.Contains(found, f => f.Cache == "selftest-tracked" && f.Site.StartsWith("SelftestTargetCommand.AllocateBuffers") && f.Count == 90);
        Assert.Contains(found, f => f.Cache == "selftest-debug" && f.Site.StartsWith("SelftestTargetCommand.AllocateRequests") && f.Count == 25);
    }

    internal static void CreateDump(int pid, string file, string kind)
    {
        string createdump = Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), "createdump");
        var psi = new ProcessStartInfo(createdump) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(kind);
        psi.ArgumentList.Add("-f");
        psi.ArgumentList.Add(file);
        psi.ArgumentList.Add(pid.ToString());
        var (code, stdout, stderr) = CliRunner.RunProcess(psi, TimeSpan.FromSeconds(120));
        Assert.True(code == 0, $"createdump failed ({code}): {stdout}{stderr}");
    }
}

/// <summary>Targets the inspector must refuse or report as empty, with the documented exit codes.</summary>
[Trait("Category", "Inspect")]
public sealed class InspectTargetErrorTests(ITestOutputHelper output)
{
    [Fact]
    public void MissingProcessIsTargetError()
    {
        var (code, _, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", "999999999");
        output.WriteLine(stderr);
        Assert.Equal(3, code);
        Assert.Contains("no process with id 999999999", stderr);
    }

    [Fact]
    public void ProcessWithoutDotnetIsTargetError()
    {
        using var sleeper = Process.Start(new ProcessStartInfo("sleep", "60") { UseShellExecute = false })!;
        try
        {
            var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", sleeper.Id.ToString());
            output.WriteLine(stdout + stderr);
            Assert.Equal(3, code);
            Assert.Contains("no .NET runtime", stdout + stderr);
        }
        finally
        {
            sleeper.Kill();
        }
    }

    [Fact]
    public void ProcessWithTheLibraryButNoSystemReportsNone()
    {
        using var target = new SelftestTargetFixture(["--no-system"]);
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", target.Pid.ToString(), "--leaks", "--json");
        Assert.True(code == 0, stderr);
        Assert.Empty(JsonSerializer.Deserialize(stdout, CliJsonContext.Default.InspectReport)!.Systems);
    }

    [Fact]
    public void InspectingItselfIsRefused()
    {
        var e = Assert.Throws<TargetException>(() => Inspector.InspectProcess(Environment.ProcessId, leaks: false));
        Assert.Contains("cannot inspect itself", e.Message);
    }

    [Fact]
    public void MissingDumpIsTargetError()
    {
        var (code, _, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", "--dump", "/nonexistent/core.1", "--json");
        Assert.Equal(3, code);
        Assert.Contains("dump file not found", stderr);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("12x")]
    [InlineData("0")]
    [InlineData("99999999999")]
    public void PidThatIsNotAProcessIdIsTargetError(string pid)
    {
        var (code, _, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", pid);
        output.WriteLine(stderr);
        Assert.Equal(3, code);
        Assert.Contains($"inspect: '{pid}' is not a process id", stderr);
    }

    [Fact]
    public void DumpThatIsNoCoreFileIsTargetError()
    {
        string dump = Path.Combine(Path.GetTempPath(), $"allocators-test-{Guid.NewGuid():N}.core");
        try
        {
            File.WriteAllText(dump, "not a core dump, just text\n");
            Assert.Contains("not a core dump", RefusedDumpLine(dump, output));
        }
        finally
        {
            File.Delete(dump);
        }
    }

    /// <summary>Runs <c>inspect --dump</c> on a file it must refuse: exit 3 and one line, naming the file, and no stack trace.</summary>
    internal static string RefusedDumpLine(string dump, ITestOutputHelper output)
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", "--dump", dump);
        output.WriteLine($"{new FileInfo(dump).Length} bytes: exit {code}: {stderr}");
        Assert.True(code == 3, $"exit {code}: {stderr}{stdout}");
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(dump, line);
        return line;
    }

    [Fact]
    public void PidAndDumpTogetherIsUsageError()
    {
        var (code, _, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "inspect", "12", "--dump", "x");
        Assert.Equal(2, code);
        Assert.Contains("either a process id or --dump", stderr);
    }
}
