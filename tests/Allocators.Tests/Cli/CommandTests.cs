using System.Text.Json;
using System.Text.RegularExpressions;
using Allocators.Cli.Output;
using Allocators.Cli.Workloads;
using Allocators.Physical;
using Xunit.Abstractions;

namespace Allocators.Tests.Cli;

/// <summary>The stress workload's audit, /proc/meminfo, and the CLI's commands, JSON and exit codes.</summary>
[Trait("Category", "Cli")]
public sealed unsafe partial class CommandTests(ITestOutputHelper output)
{
    private static MemorySystem NewSystem(int mib = 64) => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = (long)mib << 20 } });

    [Fact]
    public void StressWorkloadPassesItsAudit()
    {
        using var system = NewSystem();
        using var workload = new StressWorkload(system, threads: 3, TimeSpan.FromSeconds(1), seed: 7);
        workload.Run();
        var report = workload.Audit(1);
        foreach (var l in report.Layers) output.WriteLine($"{l.Layer}: {l.Allocated} allocated, {l.CrossThreadFrees} freed across threads, {l.Failures} failures");
        Assert.True(report.Passed, string.Join("\n", report.AuditFailures));
        Assert.All(report.Layers, l => Assert.True(l.Allocated > 0 && l.CrossThreadFrees > 0, $"{l.Layer} saw no traffic"));
        Assert.Equal(report.PercpuCounterExpected, report.PercpuCounterSum);
        Assert.Equal(report.InitialBuddyInfo, report.FinalBuddyInfo);
    }

    [Fact]
    public void StressAuditFailsWhenAnObjectIsNeverFreed()
    {
        using var system = NewSystem();
        using var workload = new StressWorkload(system, threads: 2, TimeSpan.FromMilliseconds(200), seed: 3);
        workload.Run();
        void* leaked = system.Slab.Kmalloc(100);
        var report = workload.Audit(0.2);
        output.WriteLine(string.Join("\n", report.AuditFailures));
        Assert.False(report.Passed);
        Assert.False(report.FreeListsRestored);
        Assert.Contains(report.AuditFailures, f => f.Contains("kmalloc-128 still has 1 active object"));
        system.Slab.Kfree(leaked);
    }

    [Fact]
    public void MeminfoHasTheKernelLayoutAndCountsSlabPages()
    {
        using var system = NewSystem();
        string before = system.Meminfo();
        output.WriteLine(before);
        var lines = before.TrimEnd('\n').Split('\n');
        Assert.All(lines, l => Assert.Matches(MeminfoLine(), l));
        // %-16s%8lu kB: 27 characters unless the number needs more than 8 digits (VmallocTotal does).
        Assert.All(lines, l => Assert.Matches(@"^[A-Za-z()_]+: +\d{1,} kB$", l));
        Assert.All(lines, l => Assert.True(l.Length == 27 || (l.Length > 27 && l[16] != ' '), l));
        string[] highLow = system.Pages.HasHighMem ? ["HighTotal", "HighFree", "LowTotal", "LowFree"] : [];
        Assert.Equal(["MemTotal", "MemFree", "MemAvailable", "SwapCached", "Active", "Inactive", "Active(anon)", "Inactive(anon)",
            "Active(file)", "Inactive(file)", .. highLow, "SwapTotal", "SwapFree", "Slab", "SReclaimable", "SUnreclaim", "PageTables", "Percpu"],
            system.MeminfoItems().Select(i => i.Name));
        Assert.Contains("MemTotal:          65536 kB", before);
        Assert.Contains("PageTables:            0 kB", before);

        var p = system.Slab.Kmalloc(3000); // one kmalloc-4k slab: order 3, 32 KiB
        var items = system.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);
        Assert.Equal(32, items["Slab"]);
        Assert.Equal(32, items["SUnreclaim"]);
        Assert.Equal(0, items["SReclaimable"]);
        Assert.Equal((system.Pages.NrFreePages) * 4, items["MemFree"]);
        system.Slab.Kfree(p);

        // Percpu: the pages of the per-CPU chunks, every unit included (pcpu_nr_pages).
        Assert.Equal(0, system.MeminfoItems().Single(i => i.Name == "Percpu").Kb);
        nint v = system.Percpu.AllocPercpu(64);
        long chunkKb = (long)system.Percpu.PossibleCpus * system.Percpu.UnitSize / 1024;
        long percpuKb = system.MeminfoItems().Single(i => i.Name == "Percpu").Kb;
        Assert.True(percpuKb >= chunkKb && percpuKb < 2 * chunkKb, $"Percpu {percpuKb} kB for {chunkKb} kB of units");
        Assert.Equal(system.Percpu.NrPages * 4, percpuKb);
        system.Percpu.FreePercpu(v);
    }

    [GeneratedRegex(@"^[A-Za-z()_]+:\s+\d+ kB$")]
    private static partial Regex MeminfoLine();

    [Fact]
    public void StatJsonCarriesEveryFile()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "stat", "--json", "--arena-mib", "64");
        Assert.True(code == 0, stderr);
        var report = JsonSerializer.Deserialize(stdout, CliJsonContext.Default.StatReport)!;
        Assert.Equal(["buddyinfo", "zoneinfo", "slabinfo", "vmallocinfo", "meminfo", "vmstat"], report.Files);
        Assert.Equal(65536, report.MeminfoItems!.Single(i => i.Name == "MemTotal").Kb);
        Assert.StartsWith("Node 0, zone      DMA", report.BuddyInfo);
        Assert.StartsWith("slabinfo - version: 2.1", report.SlabInfo);
        Assert.Contains("pages free", report.ZoneInfo);
        Assert.Contains(report.VmStatItems!, i => i.Name == "nr_free_pages" && i.Value > 16000);
        // A booted system: kernel-thread stacks and a hash table in vmallocinfo, init's page tables in meminfo.
        string[] areas = report.VmallocInfo!.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(areas, l => l.Contains("AllocThreadStackNode") && l.Contains(" pages=4 vmalloc"));
        Assert.Contains(areas, l => l.Contains("AllocLargeSystemHash") && l.Contains(" pages=8 vmalloc"));
        Assert.Contains(report.MeminfoItems!, i => i.Name == "PageTables" && i.Kb >= 16);
        Assert.Contains(report.MeminfoItems!, i => i.Name == "VmallocUsed" && i.Kb > 0);
        Assert.Contains(report.MeminfoItems!, i => i.Name == "Percpu" && i.Kb > 0);
        Assert.Contains(report.MeminfoItems!, i => i.Name == "VmallocTotal" && i.Kb == 34359738367);
        Assert.Contains(report.Caches!, c => c.Name == "kmalloc-8k");
    }

    [Fact]
    public void StatJsonCarriesOnlyTheChosenFiles()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "stat", "buddyinfo", "--json", "--arena-mib", "64");
        Assert.True(code == 0, stderr);
        var report = JsonSerializer.Deserialize(stdout, CliJsonContext.Default.StatReport)!;
        Assert.Equal(["buddyinfo"], report.Files);
        Assert.StartsWith("Node 0, zone      DMA", report.BuddyInfo);
        Assert.NotEmpty(report.Zones!);
        // Absent, not empty: the JSON has only what was asked for.
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal(["files", "buddyInfo", "zones"], json.RootElement.EnumerateObject().Select(p => p.Name));
    }

    [Fact]
    public void StatPrintsTheChosenFiles()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "stat", "buddyinfo", "meminfo");
        output.WriteLine(stdout);
        Assert.True(code == 0, stderr);
        Assert.Contains("/proc/buddyinfo:", stdout);
        Assert.Contains("/proc/meminfo:", stdout);
        Assert.Contains("MemTotal:         262144 kB", stdout);
        Assert.DoesNotContain("/proc/vmstat:", stdout);
    }

    [Fact]
    public void StressCliPrintsJsonAndExitsZero()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "stress", "--threads", "2", "--seconds", "0.5", "--arena-mib", "64", "--json");
        Assert.True(code == 0, stderr + stdout);
        var report = JsonSerializer.Deserialize(stdout, CliJsonContext.Default.StressReport)!;
        Assert.True(report.Passed);
        Assert.True(report.FreeListsRestored);
        Assert.Equal(2, report.Threads);
        Assert.Equal(5, report.Layers.Count);
    }

    [Theory]
    [InlineData("stress", "--threads", "-1")]
    [InlineData("stress", "--seconds", "abc")]
    [InlineData("stat", "nosuchfile")]
    [InlineData("no-such-command")]
    [InlineData("inspect")]
    public void UsageErrorsExitWithTwo(params string[] args)
    {
        var (code, _, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), args);
        output.WriteLine(stderr);
        Assert.Equal(2, code);
        Assert.Contains("usage error", stderr);
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("stress", "--help")]
    [InlineData("inspect", "--help")]
    public void HelpDescribesEveryOption(params string[] args)
    {
        var (code, stdout, _) = CliRunner.Run(TimeSpan.FromSeconds(60), args);
        Assert.Equal(0, code);
        Assert.Contains("EXAMPLES:", stdout);
        Assert.Contains("--json", stdout);
        Assert.DoesNotContain("selftest-target", stdout);
    }

    [Fact]
    public void DemoJsonReportsRestoredFreeLists()
    {
        var (code, stdout, stderr) = CliRunner.Run(TimeSpan.FromSeconds(60), "demo", "--threads", "2", "--seconds", "0.3", "--json");
        Assert.True(code == 0, stderr);
        var report = JsonSerializer.Deserialize(stdout, CliJsonContext.Default.DemoReport)!;
        Assert.True(report.FreeListsRestored);
        Assert.Equal(0, report.StampErrors);
        Assert.True(report.Operations > 0);
    }
}
