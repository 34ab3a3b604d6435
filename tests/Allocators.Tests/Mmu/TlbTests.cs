using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public unsafe class TlbTests
{
    [Fact]
    public void MissingFlushIsObservableAndTheFlushFixesIt()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 2 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            mm.Write<long>(a, 111);
            mm.Write<long>(a + 4096, 222);
            Assert.Equal(111, mm.Read<long>(a)); // cached in this thread's TLB
            PageTableEntry original = mm.GetPte(a);
            PageTableEntry other = mm.GetPte(a + 4096);

            // Point the first page's PTE at the second page's frame, without a flush.
            mm.PokePteWithoutFlush(a, PageTableEntry.Make(other.Pfn, original.Protection));
            Assert.Equal(111, mm.Read<long>(a)); // stale translation: the change is not seen
            var before = mm.TlbStatistics;
            mm.FlushTlbPage(a);
            Assert.Equal(222, mm.Read<long>(a)); // after the flush the walk finds the new frame
            Assert.Equal(before.PageFlushes + 1, mm.TlbStatistics.PageFlushes);

            // The same with a range flush and a full flush.
            mm.PokePteWithoutFlush(a, original);
            Assert.Equal(222, mm.Read<long>(a));
            mm.FlushTlbRange(a, a + 4096);
            Assert.Equal(111, mm.Read<long>(a));
            mm.PokePteWithoutFlush(a, PageTableEntry.Make(other.Pfn, original.Protection));
            Assert.Equal(111, mm.Read<long>(a));
            mm.FlushTlbAll();
            Assert.Equal(222, mm.Read<long>(a));
            mm.PokePteWithoutFlush(a, original);
            mm.FlushTlbAll();
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void AlternatingSpacesEachReadTheirOwnPagesThroughTheThreadsCursor()
    {
        // The thread's record caches one TLB (the last space it touched): switching must never serve one space's
        // translation to another, and a space made after another was disposed must not inherit its cursor.
        using var f = new MmuFixture();
        for (int round = 0; round < 3; round++)
        {
            using var a = f.NewProcess();
            using var b = f.NewProcess();
            ulong va = a.Mmap(0, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            Assert.Equal(va, b.Mmap(va, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed));
            a.Write<long>(va, 100 + round);
            b.Write<long>(va, 200 + round);
            for (int i = 0; i < 1000; i++)
            {
                Assert.Equal(100 + round, a.Read<long>(va));
                Assert.Equal(200 + round, b.Read<long>(va));
            }
            Assert.True(a.TlbStatistics.Hits > 0 && b.TlbStatistics.Hits > 0, "both spaces were read through their TLBs");
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void AFlushOnAnotherThreadReachesThisThread()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 2 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            mm.Write<long>(a, 1);
            mm.Write<long>(a + 4096, 2);
            Assert.Equal(1, mm.Read<long>(a));
            PageTableEntry original = mm.GetPte(a);
            var t = new Thread(() =>
            {
                mm.PokePteWithoutFlush(a, PageTableEntry.Make(mm.GetPte(a + 4096).Pfn, original.Protection));
                mm.FlushTlbPage(a);
            });
            t.Start();
            t.Join();
            Assert.Equal(2, mm.Read<long>(a));
            mm.PokePteWithoutFlush(a, original);
            mm.FlushTlbAll();
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MprotectFlushesSoStaleWritableEntriesAreGone()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        ulong a = mm.Mmap(0, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        mm.Write<int>(a, 1);
        mm.Write<int>(a, 2); // TLB hit
        mm.Mprotect(a, 4096, MemoryProtection.Read);
        Assert.Throws<SegmentationFaultException>(() => mm.Write<int>(a, 3));
        Assert.Equal(2, mm.Read<int>(a));
    }

    [Fact]
    public void HitsMissesAndDirtyTracking()
    {
        using var f = new MmuFixture();
        using var mm = f.NewProcess();
        ulong a = mm.Mmap(0, 4096, MemoryProtection.ReadWrite, MapFlags.Shared | MapFlags.Anonymous);
        mm.Read<int>(a); // fault, shared page mapped RW but clean
        var pte = mm.GetPte(a);
        Assert.True(pte.Writable);
        Assert.True(pte.Young);   // the walk set Accessed
        Assert.False(pte.Dirty);  // a read does not set Dirty
        var s0 = mm.TlbStatistics;
        for (int i = 0; i < 100; i++) mm.Read<int>(a);
        var s1 = mm.TlbStatistics;
        Assert.Equal(s0.Hits + 100, s1.Hits);
        Assert.Equal(s0.Misses, s1.Misses);
        mm.Write<int>(a, 5); // the clean TLB entry is not writable: walk again, set Dirty
        Assert.True(mm.GetPte(a).Dirty);
        Assert.Equal(s1.Misses + 1, mm.TlbStatistics.Misses);
        Assert.True(mm.TestAndClearYoung(a));
        Assert.False(mm.GetPte(a).Young);
        mm.Read<int>(a);
        Assert.True(mm.GetPte(a).Young);
    }

    [Fact]
    public void ManyPagesEvictAndStillTranslateCorrectly()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            const int n = 1024; // four times the TLB's 256 entries
            ulong a = mm.Mmap(0, n * 4096UL, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            for (int i = 0; i < n; i++) mm.Write<int>(a + (ulong)i * 4096, i);
            for (int round = 0; round < 3; round++)
                for (int i = 0; i < n; i++) Assert.Equal(i, mm.Read<int>(a + (ulong)i * 4096));
            Assert.True(mm.TlbStatistics.Misses >= n);
        }
        f.AssertAllFreed();
    }
}

public class AccessorTests
{
    [Fact]
    public void AccessorReadsAndWritesLikeTheSpace()
    {
        using var f = new MmuFixture();
        var mm = f.NewProcess();
        ulong a = mm.Mmap(0, 3 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        var acc = mm.GetAccessor();
        acc.Write<long>(a, 5);                 // fault through the accessor
        acc.Write<int>(a + 4094, 0x01020304);  // crosses a page
        Assert.Equal(5, acc.Read<long>(a));
        Assert.Equal(0x01020304, mm.Read<int>(a + 4094));
        Assert.Same(mm, acc.Space);
        mm.Mprotect(a, 4096, MemoryProtection.Read);
        try { acc.Write<long>(a, 6); Assert.Fail("expected a fault"); }
        catch (SegmentationFaultException ex) { Assert.Equal(SegvCode.AccessError, ex.Code); }
        mm.Dispose();
        try { acc.Read<long>(a); Assert.Fail("expected ObjectDisposedException"); }
        catch (ObjectDisposedException) { }
        f.AssertAllFreed();
    }
}
