using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Highmem;

/// <summary>
/// ALLOCATORS_HIGHMEM, the kernel's <c>highmem=</c>: the default split of every arena that does not choose one
/// (tests set <see cref="PhysicalMemoryOptions.DefaultHighMemory"/>, the value the variable gives, per system).
/// </summary>
public sealed class HighmemBootParameterTests
{
    private const long MiB = 1L << 20;

    [Theory]
    [InlineData("64M", 64 * MiB, 0)]
    [InlineData("1G", 1024 * MiB, 0)]
    [InlineData("512k", 512 * 1024, 0)]
    [InlineData("4096", 4096, 0)]
    [InlineData(" 50% ", 0, 50)]
    [InlineData("0", 0, 0)]
    public void SizesAndSharesAreRead(string text, long bytes, int percent)
        => Assert.Equal(new HighMemorySize(bytes, percent), HighMemorySize.Parse(text));

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("  ")]
    public void AnUnsetVariableMeansNoSplit(string? text) => Assert.Null(HighMemorySize.Parse(text));

    [Theory]
    [InlineData("half")]
    [InlineData("100%")]
    [InlineData("-4M")]
    [InlineData("12T")]
    [InlineData("%")]
    [InlineData("99999999999G")]
    public void BadTextIsRefusedNamingTheVariable(string text)
    {
        var ex = Assert.Throws<ArgumentException>(() => HighMemorySize.Parse(text));
        Assert.Contains(PhysicalMemoryOptions.HighMemoryEnvironmentVariable, ex.Message);
        Assert.Contains(text, ex.Message);
    }

    [Theory]
    [InlineData(64, "50%", 32)]   // half of a 64 MiB arena
    [InlineData(16, "50%", 8)]    // below 32 MiB there are no DMA zones
    [InlineData(64, "10%", 60)]   // 6.4 MiB asked: at most that much, in whole 4 MiB blocks
    [InlineData(64, "90%", 20)]   // never inside DMA (4 MiB) + DMA32 (16 MiB)
    [InlineData(64, "1G", 20)]    // more than the arena: everything above DMA32
    [InlineData(64, "8M", 56)]    // a size: exactly that much high memory
    [InlineData(8, "50%", 4)]
    public void TheSplitIsRoundedAndKeptAboveTheDmaZones(long sizeMiB, string highmem, long lowMiB)
    {
        using var sys = NewSystem(sizeMiB, highmem);
        Assert.True(sys.Pages.HasHighMem);
        Assert.Equal((sizeMiB - lowMiB) * MiB / PageFrame.PageSize, SpannedHigh(sys));
        Assert.Equal(VirtualAddress.PageOffset + (ulong)(lowMiB * MiB), sys.Kernel.HighMemory);
    }

    [Theory]
    [InlineData(4, "50%")]   // one 4 MiB block: the kernel needs it low
    [InlineData(64, "0")]
    [InlineData(64, "3M")]   // less than a block of high memory
    public void AnArenaTooSmallForTheSplitStaysAllLow(long sizeMiB, string highmem)
    {
        using var sys = NewSystem(sizeMiB, highmem);
        Assert.False(sys.Pages.HasHighMem);
        Assert.Equal(0, SpannedHigh(sys));
        Assert.Equal(VirtualAddress.PageOffset + (ulong)(sizeMiB * MiB), sys.Kernel.HighMemory);
    }

    [Fact]
    public void AMalformedVariableIsReportedOnlyBySystemsThatWouldUseIt()
    {
        const string Error = "ALLOCATORS_HIGHMEM=\"half\" is neither a size nor a share";
        var uses = new PhysicalMemoryOptions { Size = 64 * MiB, DefaultHighMemory = null, DefaultHighMemoryError = Error };
        var ex = Assert.Throws<ArgumentException>(uses.Validate);
        Assert.Contains(Error, ex.Message);
        Assert.Equal(nameof(PhysicalMemoryOptions.LowMemoryLimit), ex.ParamName);
        new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow, DefaultHighMemoryError = Error }.Validate();
        new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = 32 * MiB, DefaultHighMemoryError = Error }.Validate();
    }

    [Fact]
    public void AnExplicitLimitOrAllMemoryLowWinsOverTheVariable()
    {
        using (var chosen = NewSystem(64, "50%", lowMemoryLimit: 48 * MiB))
            Assert.Equal(16 * MiB / PageFrame.PageSize, SpannedHigh(chosen));
        using var allLow = NewSystem(64, "50%", lowMemoryLimit: PhysicalMemoryOptions.AllMemoryLow);
        Assert.False(allLow.Pages.HasHighMem);
        Assert.DoesNotContain(allLow.MeminfoItems(), i => i.Name == "HighTotal");
    }

    [Fact]
    public void HotAddedMemoryIsHighWhenTheVariableSplitsBootMemory()
    {
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 32 * MiB, Model = MemoryModel.Sparse, SectionSize = 8 * MiB, MaxSize = 64 * MiB,
                DefaultHighMemory = HighMemorySize.Parse("50%"),
            },
        });
        long before = SpannedHigh(sys);
        Assert.Equal(16 * MiB / PageFrame.PageSize, before);
        Assert.True(sys.Pages.AddMemory() >= 0);
        Assert.Equal(before + 8 * MiB / PageFrame.PageSize, sys.Pages.Zones.Where(z => z.Type == ZoneType.HighMem).Sum(z => z.PresentPages));
    }

    private static MemorySystem NewSystem(long sizeMiB, string highmem, long? lowMemoryLimit = null) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions
        {
            Size = sizeMiB * MiB, LowMemoryLimit = lowMemoryLimit, DefaultHighMemory = HighMemorySize.Parse(highmem),
        },
    });

    private static long SpannedHigh(MemorySystem sys) => sys.Pages.Zones.Where(z => z.Type == ZoneType.HighMem).Sum(z => z.SpannedPages);
}
