using System.Text.Json;
using Allocators.Slab;

namespace Allocators.Tests.Slab;

/// <summary>
/// <see cref="SlabStatistics"/>: fast-path counting is a per-process switch, off by default like CONFIG_SLUB_STATS. This
/// test project turns it on (the counter tests check exact counts); programs that do not, the CLI among them, run the
/// fast paths without any counting.
/// </summary>
public sealed class SlabStatisticsTests
{
    [Fact]
    public void TheTestsRunWithFastPathCountingOn()
    {
        Assert.True(AppContext.TryGetSwitch(SlabStatistics.SwitchName, out bool on) && on);
        Assert.True(SlabStatistics.CountsFastPaths);
    }

    [Fact]
    public void TheCliRunsWithoutIt()
    {
        string config = Path.Combine(AppContext.BaseDirectory, "Allocators.Cli.runtimeconfig.json");
        using var json = JsonDocument.Parse(File.ReadAllText(config));
        bool set = json.RootElement.GetProperty("runtimeOptions").TryGetProperty("configProperties", out var properties)
            && properties.TryGetProperty(SlabStatistics.SwitchName, out _);
        Assert.False(set, $"{config} turns fast-path statistics on");
    }
}
