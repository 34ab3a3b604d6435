using Allocators.Swap;
using CsCheck;

namespace Allocators.Tests.Swap;

/// <summary>The x86-64 L1TF-safe swap PTE encoding (arch/x86/include/asm/pgtable_64.h).</summary>
public sealed class SwapEntryTests
{
    [Theory]
    [InlineData(0, 1ul, 0x07ff_ffff_ffff_fc00ul)]
    [InlineData(1, 1ul, 0x0fff_ffff_ffff_fc00ul)]
    [InlineData(31, 0x1_2345_6789ul, 0xffff_fdb9_7530_ec00ul)]
    [InlineData(5, (1ul << 50) - 1, 0x2800_0000_0000_0000ul)]
    public void KnownVectors(int type, ulong offset, ulong pte)
    {
        var entry = new SwapEntry(type, offset);
        Assert.Equal(pte, entry.ToPte());
        Assert.True(SwapEntry.IsSwapPte(pte));
        Assert.Equal(entry, SwapEntry.FromPte(pte));
        Assert.Equal(type, SwapEntry.FromPte(pte).Type);
        Assert.Equal(offset, SwapEntry.FromPte(pte).Offset);
    }

    [Fact]
    public void FlagsUseTheKernelsBitsAndDoNotChangeTheEntry()
    {
        Assert.Equal(1ul << 1, (ulong)SwapPteFlags.SoftDirty);  // _PAGE_SWP_SOFT_DIRTY = _PAGE_RW
        Assert.Equal(1ul << 2, (ulong)SwapPteFlags.UffdWp);     // _PAGE_SWP_UFFD_WP = _PAGE_USER
        Assert.Equal(1ul << 3, (ulong)SwapPteFlags.Exclusive);  // _PAGE_SWP_EXCLUSIVE = _PAGE_PWT
        var entry = new SwapEntry(3, 77);
        ulong pte = entry.ToPte(SwapPteFlags.SoftDirty | SwapPteFlags.Exclusive);
        Assert.Equal(entry.ToPte() | 0b1010, pte);
        Assert.Equal(entry, SwapEntry.FromPte(pte));
        Assert.Equal(SwapPteFlags.SoftDirty | SwapPteFlags.Exclusive, SwapEntry.FlagsOf(pte));
    }

    [Fact]
    public void NoneAndPresentPtesAreNotSwapEntries()
    {
        Assert.False(SwapEntry.IsSwapPte(0));                                // pte_none
        Assert.False(SwapEntry.IsSwapPte(0x1234_5000 | 1));                  // present
        Assert.False(SwapEntry.IsSwapPte(0x1234_5000 | 1ul << 8));           // PROT_NONE counts as present
        Assert.Throws<ArgumentException>(() => SwapEntry.FromPte(0));
        Assert.True(default(SwapEntry).IsNone);
        Assert.Throws<InvalidOperationException>(() => default(SwapEntry).ToPte());
        Assert.Throws<ArgumentOutOfRangeException>(() => new SwapEntry(32, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SwapEntry(0, 1ul << 50));
    }

    [Fact]
    public void RoundTripsEveryTypeAndOffset()
    {
        Gen.Select(Gen.Int[0, 31], Gen.ULong[1, (1ul << 50) - 1], Gen.Int[0, 7]).Sample((type, offset, flagBits) =>
        {
            var entry = new SwapEntry(type, offset);
            var flags = (SwapPteFlags)((ulong)flagBits << 1);
            ulong pte = entry.ToPte(flags);
            Assert.Equal(0ul, pte & 1);                         // not present
            Assert.Equal(0ul, pte & 1ul << 8);                  // not PROT_NONE
            Assert.Equal((ulong)type, pte >> 59);
            Assert.Equal(~offset & ((1ul << 50) - 1), pte >> 9 & ((1ul << 50) - 1));
            Assert.Equal(entry, SwapEntry.FromPte(pte));
            Assert.Equal(flags, SwapEntry.FlagsOf(pte));
        }, iter: 5000);
    }
}
