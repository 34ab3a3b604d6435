using Allocators.Physical;

namespace Allocators.Tests.Checks;

/// <summary>The checked-mode options: the ALLOCATORS_CHECKS syntax and the range checks.</summary>
public sealed class CheckedModeOptionsTests
{
    [Fact]
    public void ParseReadsEveryEntryAndLeavesTheRestOff()
    {
        var o = CheckedModeOptions.Parse("init_on_alloc, init_on_free=0,kasan=on,kasan.redzone=64,kasan.stacktrace=off,kasan.quarantine=1048576,kfence.sample_interval=5,kfence.num_objects=31,page_alloc.shuffle=1,slab_freelist_random=true");
        Assert.True(o.InitOnAlloc);
        Assert.False(o.InitOnFree);
        Assert.True(o.Kasan);
        Assert.Equal(64, o.KasanRedZone);
        Assert.False(o.KasanStackTrace);
        Assert.Equal(1L << 20, o.QuarantineBytes);
        Assert.Equal(5, o.KfenceSampleInterval);
        Assert.Equal(31, o.KfenceObjects);
        Assert.True(o.ShufflePages);
        Assert.True(o.SlabFreelistRandom);
        Assert.True(o.Any);

        var none = CheckedModeOptions.Parse("");
        Assert.False(none.Any);
        Assert.Equal(32, none.KasanRedZone);
        Assert.True(none.KasanStackTrace);
        Assert.Equal(255, none.KfenceObjects);

        var counted = CheckedModeOptions.Parse("kfence.sample_rate=7");
        Assert.Equal(7, counted.KfenceSampleRate);
        Assert.Equal(0, counted.KfenceSampleInterval);
        Assert.True(counted.Kfence);
    }

    [Fact]
    public void ANegativeSampleRateIsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Checks = new CheckedModeOptions { KfenceSampleRate = -1 } },
        }.Validate());
        Assert.Equal("KfenceSampleRate", e.ParamName);
    }

    [Theory]
    [InlineData("kasn", "unknown entry 'kasn'")]
    [InlineData("kasan=maybe", "'kasan=maybe' wants")]
    [InlineData("kfence.sample_interval=-1", "non-negative number")]
    [InlineData("kfence.sample_rate=-5", "non-negative number")]
    [InlineData("kasan.redzone=x", "non-negative number")]
    public void ParseRefusesWhatItDoesNotKnow(string text, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => CheckedModeOptions.Parse(text));
        Assert.Contains(message, e.Message);
        Assert.Contains(CheckedModeOptions.EnvironmentVariable, e.Message);
    }

    [Theory]
    [InlineData(16, 255, "KasanRedZone")]
    [InlineData(36, 255, "KasanRedZone")]
    [InlineData(32, 0, "KfenceObjects")]
    [InlineData(32, 512, "KfenceObjects")]
    public void SystemsRefuseOutOfRangeValues(int redZone, int objects, string property)
    {
        var e = Assert.Throws<ArgumentException>(() => new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Checks = new CheckedModeOptions { KasanRedZone = redZone, KfenceObjects = objects } },
        }.Validate());
        Assert.Equal(property, e.ParamName);
    }
}
