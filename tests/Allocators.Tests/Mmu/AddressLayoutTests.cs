using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public class AddressLayoutTests
{
    [Theory]
    [InlineData(0x0000000000401000UL, 0, 0, 2, 1, 0x000)]
    [InlineData(0x00007fffffffe000UL, 255, 511, 511, 510, 0)]
    [InlineData(0x00007f1234567abcUL, 254, 72, 418, 359, 0xabc)]
    [InlineData(0xffffc90000000000UL, 402, 0, 0, 0, 0)]
    public void SplitMatchesTheKernelVectors(ulong va, int pgd, int pud, int pmd, int pte, int offset)
    {
        Assert.Equal((pgd, pud, pmd, pte, offset), VirtualAddress.Split(va));
        Assert.Equal(va, VirtualAddress.Compose(pgd, pud, pmd, pte, offset));
    }

    [Theory]
    [InlineData(0x0000000000000000UL, true)]
    [InlineData(0x00007fffffffffffUL, true)]
    [InlineData(0x0000800000000000UL, false)]
    [InlineData(0xffff7fffffffffffUL, false)]
    [InlineData(0xffff800000000000UL, true)]
    [InlineData(0xffffffffffffffffUL, true)]
    [InlineData(0x1234000000000000UL, false)]
    public void CanonicalCheck(ulong va, bool canonical) => Assert.Equal(canonical, VirtualAddress.IsCanonical(va));

    [Fact]
    public void EntryBitsAreTheX86Ones()
    {
        Assert.Equal(0x67UL, (ulong)PteFlags.PageTable);
        Assert.Equal(0x63UL, (ulong)PteFlags.KernelPageTable);
        Assert.Equal(0x8000000000000163UL, (ulong)PteFlags.PageKernel);
        Assert.Equal(0x120UL, (ulong)PteFlags.PageNone);
        Assert.Equal(0x000ffffffffff000UL, (ulong)PteFlags.PfnMask);
        Assert.Equal((ulong)(PteFlags.Present | PteFlags.ReadWrite | PteFlags.User | PteFlags.Accessed | PteFlags.NoExecute), (ulong)PteFlags.PageShared);
        Assert.Equal(PteFlags.PageCopy, PteFlags.PageReadOnly);
        Assert.Equal(1UL << 63, (ulong)PteFlags.NoExecute);
        Assert.Equal(1UL << 7, (ulong)PteFlags.Huge);
    }

    [Fact]
    public void PteHelpersRoundTrip()
    {
        var e = PageTableEntry.Make(0xabcdef123, PteFlags.PageShared);
        Assert.Equal(0xabcdef123UL, e.Pfn);
        Assert.True(e.Present && e.Writable && e.User && e.Young && e.NoExecute);
        Assert.False(e.Dirty);
        Assert.True(e.MkDirty().Dirty);
        Assert.False(e.MkDirty().MkClean().Dirty);
        Assert.False(e.WrProtect().Writable);
        Assert.True(e.WrProtect().MkWrite().Writable);
        Assert.False(e.MkOld().Young);
        Assert.True(e.MkHuge().Huge);
        Assert.True(e.MkSpecial().Special);
        Assert.False(e.MkExec().NoExecute);
        Assert.Equal(e.Pfn, e.WrProtect().MkDirty().MkOld().Pfn);
        Assert.Equal((0xabcdef123UL << 12) | (ulong)PteFlags.PageShared, e.Value);
        // pte_modify keeps pfn, A, D and the software bits, replaces the protection.
        var m = e.MkDirty().Set(PteFlags.SoftDirty).Modify(PteFlags.PageReadOnly);
        Assert.Equal(e.Pfn, m.Pfn);
        Assert.True(m.Dirty && m.Young && m.Has(PteFlags.SoftDirty));
        Assert.False(m.Writable);
        Assert.Throws<ArgumentOutOfRangeException>(() => PageTableEntry.Make(1UL << 40, PteFlags.Present));
        for (int bit = 0; bit < 64; bit++)
        {
            var single = new PageTableEntry(1UL << bit);
            Assert.Equal(1UL << bit, single.Value);
            Assert.Equal(bit >= 12 && bit <= 51 ? 1UL << (bit - 12) : 0UL, single.Pfn);
        }
    }

    [Fact]
    public void LevelIndicesAreTheNamedOnes()
    {
        Assert.Equal([39, 30, 21, 12], [.. Enumerable.Range(0, 4).Select(VirtualAddress.LevelShift)]);
        ulong va = VirtualAddress.Compose(0x1a3, 0x0b7, 0x155, 0x1ff, 0x123);
        Assert.Equal(VirtualAddress.PgdIndex(va), VirtualAddress.TableIndex(va, VirtualAddress.PgdLevel));
        Assert.Equal(0x0b7, VirtualAddress.TableIndex(va, VirtualAddress.PudLevel));
        Assert.Equal(0x155, VirtualAddress.TableIndex(va, VirtualAddress.PmdLevel));
        Assert.Equal(0x1ff, VirtualAddress.TableIndex(va, VirtualAddress.PteLevel));
        Assert.Equal(0x123, VirtualAddress.PageOffsetOf(va));
        Assert.Equal(va - 0x123, VirtualAddress.PageAlignDown(va));
        Assert.Equal(VirtualAddress.PmdSize, 1UL << VirtualAddress.LevelShift(VirtualAddress.PmdLevel));
        Assert.Equal(VirtualAddress.PudSize, 1UL << VirtualAddress.LevelShift(VirtualAddress.PudLevel));
        Assert.Equal(VirtualAddress.PgdSize, 1UL << VirtualAddress.LevelShift(VirtualAddress.PgdLevel));
    }
}
