using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public unsafe class VmaTests
{
    private const MapFlags PrivateAnon = MapFlags.Private | MapFlags.Anonymous;

    [Fact]
    public void MprotectSplitsAndMergesAreas()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            int baseline = mm.VmaCount;
            ulong a = mm.Mmap(0, 10 * 4096, MemoryProtection.ReadWrite, PrivateAnon);
            Assert.Equal(baseline + 1, mm.VmaCount);
            mm.Mprotect(a + 3 * 4096, 2 * 4096, MemoryProtection.Read);
            Assert.Equal(baseline + 3, mm.VmaCount);
            var mid = mm.FindVma(a + 3 * 4096)!.Value;
            Assert.Equal((a + 3 * 4096, a + 5 * 4096, VmFlags.Read), (mid.Start, mid.End, mid.Flags));
            mm.Mprotect(a + 3 * 4096, 2 * 4096, MemoryProtection.ReadWrite);
            Assert.Equal(baseline + 1, mm.VmaCount);
            Assert.Throws<InvalidOperationException>(() => mm.Mprotect(a + 8 * 4096, 4 * 4096, MemoryProtection.Read));
            Assert.Equal(baseline + 1, mm.VmaCount); // nothing changed
            Assert.Throws<ArgumentException>(() => mm.Mprotect(a + 1, 4096, MemoryProtection.Read));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MunmapPunchesHolesAndFreesEmptyTables()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            long tables0 = mm.PageTablePages;
            ulong a = mm.Mmap(0x7000_0000_0000, 4 << 20, MemoryProtection.ReadWrite, PrivateAnon | MapFlags.Fixed);
            for (ulong off = 0; off < 4 << 20; off += 4096) mm.Write<byte>(a + off, 1);
            Assert.Equal(1024, mm.Statistics.RssAnon);
            Assert.Equal(tables0 + 4, mm.PageTablePages); // PUD, PMD, two PTE tables
            mm.Munmap(a + 4096, 4096);
            Assert.Equal(2, mm.Vmas.Count(v => v.Start >= a && v.End <= a + (4 << 20)));
            Assert.Throws<SegmentationFaultException>(() => mm.Read<byte>(a + 4096));
            Assert.Equal(1023, mm.Statistics.RssAnon);
            mm.Munmap(a + (2 << 20), 2 << 20); // the second PTE table becomes empty and is freed
            Assert.Equal(tables0 + 3, mm.PageTablePages);
            mm.Munmap(a, 4 << 20);
            Assert.Equal(tables0, mm.PageTablePages);
            Assert.Equal(0, mm.Statistics.RssAnon);
            Assert.Throws<ArgumentException>(() => mm.Munmap(a + 5, 4096));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void HintFixedAndNoReplace()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong hint = 0x1234_5000;
            Assert.Equal(hint, mm.Mmap(hint, 8192, MemoryProtection.Read, PrivateAnon));
            ulong other = mm.Mmap(hint, 8192, MemoryProtection.Read, PrivateAnon);
            Assert.NotEqual(hint, other); // taken: placed elsewhere
            Assert.Throws<InvalidOperationException>(() => mm.Mmap(hint, 4096, MemoryProtection.Read, PrivateAnon | MapFlags.FixedNoReplace));
            mm.Write<int>(mm.Mmap(hint + 4096, 4096, MemoryProtection.ReadWrite, PrivateAnon | MapFlags.Fixed), 3);
            Assert.Equal(3, mm.Read<int>(hint + 4096));
            Assert.Equal(VmFlags.Read, mm.FindVma(hint)!.Value.Flags);
            Assert.Throws<ArgumentException>(() => mm.Mmap(0, 0, MemoryProtection.Read, PrivateAnon));
            Assert.Throws<ArgumentException>(() => mm.Mmap(0, 4096, MemoryProtection.Read, MapFlags.Anonymous));
            Assert.Throws<ArgumentException>(() => mm.Mmap(0, 4096, MemoryProtection.Read, MapFlags.Private));
            Assert.Throws<ArgumentException>(() => mm.Mmap(0x1001, 4096, MemoryProtection.Read, PrivateAnon | MapFlags.Fixed));
            Assert.Throws<ArgumentException>(() => mm.Mmap(VirtualAddress.TaskSize - 4096, 8192, MemoryProtection.Read, PrivateAnon | MapFlags.Fixed));
            ulong top = mm.Mmap(0, 4096, MemoryProtection.Read, PrivateAnon);
            Assert.True(top < AddressSpace.MmapBase && top > AddressSpace.MmapBase - (1UL << 30)); // top-down placement
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void PopulateFaultsEverythingIn()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            mm.Mmap(0, 32 * 4096, MemoryProtection.ReadWrite, PrivateAnon | MapFlags.Populate);
            Assert.Equal(32, mm.Statistics.RssAnon);
            Assert.Equal(32, mm.Statistics.MinorFaults);
            mm.Mmap(0, 8 * 4096, MemoryProtection.Read, PrivateAnon | MapFlags.Populate);
            Assert.Equal(32, mm.Statistics.RssAnon); // read-only private: zero page
            mm.Mmap(0, 8 * 4096, MemoryProtection.ReadWrite, MapFlags.Shared | MapFlags.Anonymous | MapFlags.Populate);
            Assert.Equal(8, mm.Statistics.RssShmem);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void BrkGrowsAndShrinksTheHeap()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong start = mm.Brk(0);
            Assert.Equal(AddressSpace.DefaultBrkBase, start);
            Assert.Equal(start + 10000, mm.Brk(start + 10000));
            mm.Write<long>(start + 9000, 5);
            var heap = mm.Vmas.Single(v => v.Name == "[heap]");
            Assert.Equal((start, start + 12288), (heap.Start, heap.End));
            Assert.Equal(start + 100_000, mm.Brk(start + 100_000));
            Assert.Equal(5, mm.Read<long>(start + 9000));
            Assert.Single(mm.Vmas, v => v.Name == "[heap]");
            Assert.Equal(start + 4096, mm.Brk(start + 4096));
            Assert.Throws<SegmentationFaultException>(() => mm.Read<long>(start + 9000));
            Assert.Equal(start + 4096, mm.Brk(start - 4096)); // below start_brk: refused
            // Something mapped just above the heap blocks growth.
            mm.Mmap(start + 0x10_0000, 4096, MemoryProtection.Read, PrivateAnon | MapFlags.Fixed);
            Assert.Equal(start + 4096, mm.Brk(start + 0x20_0000));
            Assert.Equal(start, mm.Brk(start));
            Assert.DoesNotContain(mm.Vmas, v => v.Name == "[heap]");
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MremapShrinksGrowsInPlaceAndMoves()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0x3000_0000, 4 * 4096, MemoryProtection.ReadWrite, PrivateAnon | MapFlags.Fixed);
            for (int i = 0; i < 4; i++) mm.Write<int>(a + (ulong)i * 4096, i + 1);
            Assert.Equal(a, mm.Mremap(a, 4 * 4096, 8 * 4096, MremapFlags.None));
            Assert.Equal(4, mm.Read<int>(a + 3 * 4096));
            mm.Write<int>(a + 7 * 4096, 8);
            Assert.Equal(a, mm.Mremap(a, 8 * 4096, 2 * 4096, MremapFlags.None));
            Assert.Throws<SegmentationFaultException>(() => mm.Read<int>(a + 2 * 4096));
            Assert.Equal(2, mm.Statistics.RssAnon);
            // Block growth in place.
            mm.Mmap(a + 2 * 4096, 4096, MemoryProtection.Read, PrivateAnon | MapFlags.Fixed);
            Assert.Throws<OutOfMemoryException>(() => mm.Mremap(a, 2 * 4096, 4 * 4096, MremapFlags.None));
            var page0 = mm.FollowPage(a);
            ulong b = mm.Mremap(a, 2 * 4096, 64 * 4096, MremapFlags.MayMove);
            Assert.NotEqual(a, b);
            Assert.True(page0 == mm.FollowPage(b)); // the entries moved, not the data
            Assert.Equal(1, mm.Read<int>(b));
            Assert.Equal(2, mm.Read<int>(b + 4096));
            Assert.Equal(0, mm.Read<int>(b + 63 * 4096));
            Assert.Throws<SegmentationFaultException>(() => mm.Read<int>(a));
            Assert.Equal(2, mm.Statistics.RssAnon);
            ulong c = mm.Mremap(b, 64 * 4096, 2 * 4096, MremapFlags.MayMove | MremapFlags.Fixed, 0x5000_0000);
            Assert.Equal(0x5000_0000UL, c);
            Assert.Equal(2, mm.Read<int>(c + 4096));
            Assert.Throws<InvalidOperationException>(() => mm.Mremap(0x6000_0000, 4096, 8192, MremapFlags.MayMove));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void ProtNoneKeepsPagesButBlocksAccess()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 4096, MemoryProtection.ReadWrite, PrivateAnon);
            mm.Write<int>(a, 42);
            mm.Mprotect(a, 4096, MemoryProtection.None);
            Assert.False(mm.GetPte(a).Present);
            Assert.True(mm.GetPte(a).Global); // PROTNONE
            Assert.Throws<SegmentationFaultException>(() => mm.Read<int>(a));
            Assert.Equal(1, mm.Statistics.RssAnon);
            mm.Mprotect(a, 4096, MemoryProtection.Read);
            Assert.Equal(42, mm.Read<int>(a));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MapsAndStatusAreInTheProcFormats()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess("demo");
        ulong a = mm.Mmap(0x40_0000, 4096, MemoryProtection.Read | MemoryProtection.Exec, PrivateAnon | MapFlags.Fixed);
        mm.Read<int>(a);
        string maps = mm.Maps();
        Assert.Contains("00400000-00401000 r-xp 00000000 00:00 0", maps);
        Assert.Contains("7ffffffdf000-7ffffffff000 rw-p 00000000 00:00 0                   [stack]", maps);
        string status = mm.Status();
        Assert.Contains("Name:\tdemo", status);
        Assert.Contains("VmRSS:           0 kB", status);
        string[] stat = mm.Stat().Split(' ');
        Assert.Equal(52, stat.Length);
        Assert.Equal("(demo)", stat[1]);
        Assert.Equal("1", stat[9]); // minflt
    }
}
