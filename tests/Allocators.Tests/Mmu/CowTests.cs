using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

/// <summary>Copy-on-write scenarios in the spirit of the kernel's cow selftest.</summary>
public unsafe class CowTests
{
    private const int Pages = 16;
    private const MapFlags PrivateAnon = MapFlags.Private | MapFlags.Anonymous;

    private static ulong MapFilled(AddressSpace mm, byte seed)
    {
        ulong a = mm.Mmap(0, Pages * 4096, MemoryProtection.ReadWrite, PrivateAnon);
        for (int i = 0; i < Pages; i++) mm.Write<long>(a + (ulong)i * 4096, seed * 1000 + i);
        return a;
    }

    [Fact]
    public void WriteInParentAfterFork()
    {
        using var f = new MmuFixture();
        using (var parent = f.NewProcess("parent"))
        {
            ulong a = MapFilled(parent, 1);
            using var child = parent.Fork("child");
            var page = parent.FollowPage(a);
            Assert.True(page == child.FollowPage(a));
            Assert.Equal(2, page->RefCount);
            Assert.Equal(2, page->MapCount);
            Assert.False(parent.GetPte(a).Writable);
            Assert.False(child.GetPte(a).Writable);
            Assert.Equal(Pages, child.Statistics.RssAnon);

            parent.Write<long>(a, -1);
            Assert.Equal(-1, parent.Read<long>(a));
            Assert.Equal(1000, child.Read<long>(a));
            Assert.Equal(1, parent.Statistics.CowFaults);
            Assert.True(parent.FollowPage(a) != child.FollowPage(a));
            Assert.Equal(1, page->RefCount);
            Assert.Equal(1, page->MapCount);
            // Untouched pages stay shared.
            for (int i = 1; i < Pages; i++)
            {
                ulong va = a + (ulong)i * 4096;
                Assert.True(parent.FollowPage(va) == child.FollowPage(va));
                Assert.Equal(2, parent.FollowPage(va)->RefCount);
            }
            // The child's first write finds the page exclusive now and reuses it.
            child.Write<long>(a, -2);
            Assert.Equal(0, child.Statistics.CowFaults);
            Assert.Equal(1, child.Statistics.CowReuses);
            Assert.True(page == child.FollowPage(a));
            Assert.Equal(Pages, parent.Statistics.RssAnon);
            Assert.Equal(Pages, child.Statistics.RssAnon);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void WriteInChild()
    {
        using var f = new MmuFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = MapFilled(parent, 2);
            using (var child = parent.Fork())
            {
                for (int i = 0; i < Pages; i += 2) child.Write<long>(a + (ulong)i * 4096, -i);
                for (int i = 0; i < Pages; i++)
                {
                    Assert.Equal(2000 + i, parent.Read<long>(a + (ulong)i * 4096));
                    Assert.Equal(i % 2 == 0 ? -i : 2000 + i, child.Read<long>(a + (ulong)i * 4096));
                }
                Assert.Equal(Pages / 2, child.Statistics.CowFaults);
            }
            // Child gone: every page is exclusive to the parent again; writes reuse.
            for (int i = 0; i < Pages; i++) Assert.Equal(1, parent.FollowPage(a + (ulong)i * 4096)->RefCount);
            for (int i = 0; i < Pages; i++) parent.Write<long>(a + (ulong)i * 4096, 7);
            Assert.Equal(0, parent.Statistics.CowFaults);
            Assert.Equal(Pages, parent.Statistics.CowReuses);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void ForkOfAFork()
    {
        using var f = new MmuFixture();
        using (var p = f.NewProcess("p"))
        {
            ulong a = MapFilled(p, 3);
            using var c = p.Fork("c");
            using var g = c.Fork("g");
            Assert.Equal(3, p.FollowPage(a)->RefCount);
            Assert.Equal(3, p.FollowPage(a)->MapCount);
            g.Write<long>(a, 111);
            c.Write<long>(a, 222);
            Assert.Equal(3000, p.Read<long>(a));
            Assert.Equal(222, c.Read<long>(a));
            Assert.Equal(111, g.Read<long>(a));
            // The last sharer reuses instead of copying.
            p.Write<long>(a, 333);
            Assert.Equal(1, p.Statistics.CowReuses);
            Assert.Equal(0, p.Statistics.CowFaults);
            Assert.Equal(3001, g.Read<long>(a + 4096));
            Assert.Equal(3, g.FollowPage(a + 4096)->RefCount);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MunmapOnOneSide()
    {
        using var f = new MmuFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = MapFilled(parent, 4);
            var child = parent.Fork();
            parent.Munmap(a, Pages * 4096);
            Assert.Equal(0, parent.Statistics.RssAnon);
            Assert.Equal(1, child.FollowPage(a)->RefCount);
            Assert.Equal(1, child.FollowPage(a)->MapCount);
            child.Write<long>(a, 9);
            Assert.Equal(1, child.Statistics.CowReuses);
            Assert.Equal(0, child.Statistics.CowFaults);
            Assert.Equal(4001, child.Read<long>(a + 4096));
            child.Dispose();
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MprotectReadOnlyThenWrite()
    {
        using var f = new MmuFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = MapFilled(parent, 5);
            using var child = parent.Fork();
            parent.Mprotect(a, Pages * 4096, MemoryProtection.Read);
            var ex = Assert.Throws<SegmentationFaultException>(() => parent.Write<long>(a, 1));
            Assert.Equal(SegvCode.AccessError, ex.Code);
            child.Write<long>(a, 55);
            parent.Mprotect(a, Pages * 4096, MemoryProtection.ReadWrite);
            // Exclusive (the child copied) and dirty: mprotect made it writable at once (can_change_pte_writable).
            Assert.True(parent.GetPte(a).Writable);
            Assert.False(parent.GetPte(a + 4096).Writable);
            parent.Write<long>(a, 66);
            parent.Write<long>(a + 4096, 77); // still shared: copied
            Assert.Equal(66, parent.Read<long>(a));
            Assert.Equal(55, child.Read<long>(a));
            Assert.Equal(77, parent.Read<long>(a + 4096));
            Assert.Equal(5001, child.Read<long>(a + 4096));
            Assert.Equal(0, parent.Statistics.CowReuses);
            Assert.Equal(1, parent.Statistics.CowFaults);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void SharedMappingsStaySharedAcrossFork()
    {
        using var f = new MmuFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = parent.Mmap(0, 4 * 4096, MemoryProtection.ReadWrite, MapFlags.Shared | MapFlags.Anonymous);
            parent.Write<int>(a, 1);
            using var child = parent.Fork();
            child.Write<int>(a, 2);
            Assert.Equal(2, parent.Read<int>(a));
            // A page neither side touched before the fork is still the same page afterwards.
            child.Write<int>(a + 3 * 4096, 3);
            Assert.Equal(3, parent.Read<int>(a + 3 * 4096));
            Assert.Equal(0, parent.Statistics.CowFaults + child.Statistics.CowFaults);
            Assert.Equal(2, parent.Statistics.RssShmem);
            Assert.Equal(2, child.Statistics.RssShmem);
            Assert.Equal(3, parent.FollowPage(a)->RefCount); // object + two mappings
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void ZeroPageIsSharedAndNeverCounted()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 64 * 4096, MemoryProtection.ReadWrite, PrivateAnon);
            for (int i = 0; i < 64; i++) Assert.Equal(0, mm.Read<long>(a + (ulong)i * 4096));
            Assert.Equal(0, mm.Statistics.RssAnon);
            Assert.True(mm.FollowPage(a) == f.Kernel.ZeroPage);
            Assert.True(mm.GetPte(a).Special);
            using var child = mm.Fork();
            child.Write<long>(a, 5);
            Assert.Equal(0, mm.Read<long>(a));
            Assert.Equal(1, child.Statistics.RssAnon);
            Assert.Equal(64, f.Kernel.Statistics.ZeroPageMappings);
        }
        f.AssertAllFreed();
    }
}
