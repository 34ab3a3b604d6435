using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public unsafe class HugePageTests
{
    private const ulong Huge = VirtualAddress.PmdSize;

    [Fact]
    public void FaultMapsA2MiBPageAndPartialUnmapSplitsIt()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 2 * Huge, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugePage);
            Assert.Equal(0UL, a % Huge);
            mm.Write<long>(a + 12345, 99);
            var pmd = mm.GetPte(a);
            Assert.True(pmd.Huge && pmd.Present && pmd.Writable);
            Assert.Equal(512, mm.Statistics.RssAnon);
            Assert.Equal(1, mm.Statistics.MinorFaults);
            Assert.Equal(1, f.Kernel.Statistics.ThpFaultAllocations);
            for (ulong off = 0; off < Huge; off += 4096) mm.Write<long>(a + off, (long)off);
            Assert.Equal(1, mm.Statistics.MinorFaults);

            mm.Munmap(a + 4096, 4096);
            Assert.False(mm.GetPte(a).Huge);
            Assert.Equal(511, mm.Statistics.RssAnon);
            Assert.Equal(1, f.Kernel.Statistics.ThpSplits);
            Assert.Equal(8192L, mm.Read<long>(a + 8192));
            Assert.Equal(1, mm.FollowPage(a + 8192)->RefCount);

            mm.Mprotect(a + Huge, Huge, MemoryProtection.Read); // not faulted yet: nothing to split
            mm.Read<long>(a + Huge);
            Assert.True(mm.GetPte(a + Huge).Huge);
            Assert.False(mm.GetPte(a + Huge).Writable);
            Assert.Throws<SegmentationFaultException>(() => mm.Write<long>(a + Huge, 1));
            mm.Mprotect(a + Huge, 4096, MemoryProtection.ReadWrite); // partial: split
            Assert.False(mm.GetPte(a + Huge).Huge);
            mm.Write<long>(a + Huge, 1);
            Assert.Throws<SegmentationFaultException>(() => mm.Write<long>(a + Huge + 4096, 1));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void AnAreaCutInsideAHugePageSplitsItEvenWhenNothingChanges()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 2 * Huge, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugePage);
            mm.Write<long>(a + Huge + 8, 7);
            Assert.True(mm.GetPte(a + Huge).Huge);
            // Same protection, but the range ends inside the huge page: the area is cut there, so is the huge page.
            mm.Mprotect(a + 223 * 4096UL, (735 - 223) * 4096UL, MemoryProtection.ReadWrite);
            Assert.False(mm.GetPte(a + Huge).Huge);
            Assert.Equal(1, f.Kernel.Statistics.ThpSplits);
            mm.CheckConsistency();
            Assert.Equal(7, mm.Read<long>(a + Huge + 8));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void ForkSplitsHugePagesAndCopiesOnWrite()
    {
        using var f = new MmuFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = parent.Mmap(0, Huge, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugePage);
            parent.Write<long>(a, 1);
            Assert.True(parent.GetPte(a).Huge);
            using var child = parent.Fork();
            Assert.False(parent.GetPte(a).Huge);
            Assert.Equal(512, child.Statistics.RssAnon);
            child.Write<long>(a, 2);
            Assert.Equal(1, parent.Read<long>(a));
            Assert.Equal(2, child.Read<long>(a));
            Assert.Equal(1, child.Statistics.CowFaults);
        }
        f.AssertAllFreed();
    }
}
