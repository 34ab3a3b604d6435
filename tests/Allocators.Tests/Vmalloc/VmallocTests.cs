using System.Buffers;
using System.Text.RegularExpressions;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Vmalloc;

namespace Allocators.Tests.Vmalloc;

/// <summary>The kernel's test_vmalloc module cases, and the rest of the vmalloc contract.</summary>
public unsafe class VmallocTests
{
    private const ulong Page = 4096;

    internal static MemorySystem NewSystem(ArenaBacking backing = ArenaBacking.NativeMemory, long size = 64L << 20)
        => Build(backing, size, new CheckedModeOptions());

    /// <summary><see cref="NewSystem"/> with every checked mode off whatever <c>ALLOCATORS_CHECKS</c> says (KASAN records sites with stack walks).</summary>
    internal static MemorySystem NewUncheckedSystem(ArenaBacking backing = ArenaBacking.NativeMemory, long size = 64L << 20)
        => Build(backing, size, CheckedModeOptions.Parse(""));

    private static MemorySystem Build(ArenaBacking backing, long size, CheckedModeOptions checks)
        => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = size, Backing = backing, Checks = checks } });

    internal static void AssertRangeIntact(VmallocAllocator v)
    {
        v.PurgeVmapAreas();
        v.CheckConsistency();
        Assert.Equal(0, v.BusyAreas);
        Assert.Equal(1, v.FreeBlocks);
        Assert.Equal(0, v.VmallocPages);
    }

    /// <summary>
    /// Allocates with <paramref name="allocate"/>, frees it all, purges, shrinks and drains, three times: every cycle
    /// must leave the page allocator's buddyinfo as the first left it (the first keeps the kernel page tables it
    /// needed: shared by every process, never freed by vfree). Then the vmalloc range must be whole again.
    /// </summary>
    internal static void AssertCyclesEndInTheSameState(MemorySystem sys, Func<List<ulong>> allocate)
    {
        var v = sys.Vmalloc;
        string Cycle()
        {
            List<ulong> live = allocate();
            Assert.DoesNotContain(0UL, live);
            foreach (ulong a in live) v.Vfree(a);
            v.PurgeVmapAreas();
            sys.Slab.ShrinkAll();
            sys.Pages.DrainAllPages();
            return sys.Pages.BuddyInfo();
        }
        string afterFirst = Cycle();
        Assert.Equal(afterFirst, Cycle());
        Assert.Equal(afterFirst, Cycle());
        AssertRangeIntact(v);
    }

    [Fact]
    public void FixedSizeAllocFree()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        for (int i = 0; i < 2000; i++)
        {
            ulong a = v.Vmalloc(3 * Page);
            Assert.True(VmallocAllocator.IsVmallocAddr(a));
            sys.Kernel.Write(a + 3 * Page - 8, (long)i);
            Assert.Equal(i, sys.Kernel.Read<long>(a + 3 * Page - 8));
            v.Vfree(a);
        }
        AssertRangeIntact(v);
    }

    [Fact]
    public void FullFitIntoOnePageHolesUsesNoNewAddressSpace()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        var areas = new List<ulong>();
        for (int i = 0; i < 200; i++) areas.Add(v.Vmalloc(Page));
        ulong highest = areas.Max();
        for (int i = 0; i < areas.Count; i += 2) v.Vfree(areas[i]);
        v.PurgeVmapAreas();
        // Each hole is one page plus its guard page: exactly what a one-page vmalloc needs.
        var refill = new List<ulong>();
        for (int i = 0; i < 100; i++) refill.Add(v.Vmalloc(Page));
        Assert.All(refill, a => Assert.True(a < highest, $"0x{a:x} is new address space"));
        Assert.Equal(areas.Where((_, i) => i % 2 == 0).OrderBy(x => x), refill.OrderBy(x => x));
        foreach (ulong a in refill) v.Vfree(a);
        for (int i = 1; i < areas.Count; i += 2) v.Vfree(areas[i]);
        AssertRangeIntact(v);
    }

    [Fact]
    public void LongBusyListAndRandomSizes()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        var rnd = new Random(7);
        var busy = new List<ulong>();
        for (int i = 0; i < 500; i++) busy.Add(v.Vmalloc(Page));
        var live = new List<(ulong A, ulong Size)>();
        for (int i = 0; i < 1500; i++)
        {
            if (i % 100 == 0) v.CheckConsistency(); // busy (lazily freed ones too) and free tile the range
            if (live.Count > 0 && rnd.Next(3) == 0)
            {
                int k = rnd.Next(live.Count);
                v.Vfree(live[k].A);
                live.RemoveAt(k);
                continue;
            }
            ulong size = (ulong)rnd.Next(1, 24 * 4096);
            ulong a = v.Vmalloc(size);
            Assert.NotEqual(0UL, a);
            Assert.Equal(0UL, a % Page);
            sys.Kernel.Write(a, a);
            sys.Kernel.Write(a + size - 1, (byte)0x5c);
            live.Add((a, size));
        }
        var sorted = live.OrderBy(x => x.A).ToList();
        for (int i = 1; i < sorted.Count; i++) Assert.True(sorted[i - 1].A + sorted[i - 1].Size + Page <= sorted[i].A, "areas overlap or share a guard page");
        foreach (var (a, size) in live)
        {
            Assert.Equal(a, sys.Kernel.Read<ulong>(a));
            Assert.Equal(0x5c, sys.Kernel.Read<byte>(a + size - 1));
            v.Vfree(a);
        }
        foreach (ulong a in busy) v.Vfree(a);
        AssertRangeIntact(v);
    }

    [Fact]
    public void FixedAlignAndRandomSizeAlignAreZeroedAndAligned()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        var rnd = new Random(11);
        var live = new List<ulong>();
        for (int shift = 12; shift <= 30; shift++)
        {
            ulong a = v.Vmalloc(Page * 2, 1UL << shift, Gfp.Kernel);
            Assert.NotEqual(0UL, a);
            Assert.Equal(0UL, a % (1UL << shift));
            live.Add(a);
        }
        for (int i = 0; i < 300; i++)
        {
            ulong align = 1UL << rnd.Next(12, 24);
            ulong size = (ulong)rnd.Next(1, 16 * 4096);
            ulong a = v.Vmalloc(size, align, Gfp.Kernel | Gfp.Zero);
            Assert.Equal(0UL, a % align);
            var bytes = new byte[size];
            sys.Kernel.ReadBytes(a, bytes);
            Assert.All(bytes, b => Assert.Equal(0, b));
            sys.Kernel.Memset(a, 0xee, (long)size); // dirty the pages so reuse must zero them again
            live.Add(a);
            if (rnd.Next(2) == 0) { v.Vfree(a); live.Remove(a); }
        }
        foreach (ulong a in live) v.Vfree(a);
        AssertRangeIntact(v);
    }

    [Fact]
    public void AlignShiftFailsCleanlyAndTheNextVmallocWorks()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong keep = v.Vmalloc(Page);
        long freeBefore = v.FreeBlocks;
        for (int shift = 45; shift < 64; shift++) Assert.Equal(0UL, v.Vmalloc(Page, 1UL << shift, Gfp.Kernel));
        Assert.Equal(0UL, v.Vmalloc(VmallocAllocator.VmallocSize));
        Assert.Equal(0UL, v.Vmalloc(0));
        Assert.Equal(freeBefore, v.FreeBlocks);
        Assert.Equal(1, v.BusyAreas);
        ulong next = v.Vmalloc(Page);
        Assert.NotEqual(0UL, next);
        v.Vfree(next);
        v.Vfree(keep);
        AssertRangeIntact(v);
    }

    [Fact]
    public void VmMapRamAliasesTheDirectMap()
    {
        using var sys = NewSystem();
        var pages = new nint[5];
        for (int i = 0; i < pages.Length; i++) pages[i] = (nint)sys.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
        ulong a = sys.Vmalloc.VmMapRam(pages);
        for (int i = 0; i < pages.Length; i++)
        {
            sys.Kernel.Write(a + (ulong)i * Page + 100, 1000 + i);
            Assert.Equal(1000 + i, *(int*)(sys.Pages.PageAddress((PageFrame*)pages[i]) + 100));
            Assert.Equal((ulong)((PageFrame*)pages[i])->Pfn, sys.Vmalloc.VmallocToPfn(a + (ulong)i * Page));
            Assert.True(sys.Vmalloc.VmallocToPage(a + (ulong)i * Page) == (PageFrame*)pages[i]);
        }
        Assert.Contains("vm_map_ram", sys.Vmalloc.VmallocInfo());
        Assert.Throws<ArgumentException>(() => sys.Vmalloc.VmUnmapRam(a, 4));
        sys.Vmalloc.VmUnmapRam(a, 5);
        foreach (nint p in pages) sys.Pages.FreePages((PageFrame*)p, 0);
        AssertRangeIntact(sys.Vmalloc);
    }

    [Fact]
    public void CasesRunFromSeveralThreadsAtOnce()
    {
        using var sys = NewSystem(size: 128L << 20);
        var v = sys.Vmalloc;
        var errors = 0;
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            var rnd = new Random(t);
            var live = new List<(ulong A, long Stamp)>();
            for (int i = 0; i < 600; i++)
            {
                if (live.Count > 20 || (live.Count > 0 && rnd.Next(2) == 0))
                {
                    var (a, stamp) = live[0];
                    live.RemoveAt(0);
                    if (sys.Kernel.Read<long>(a) != stamp) Interlocked.Increment(ref errors);
                    v.Vfree(a);
                    continue;
                }
                ulong size = (ulong)rnd.Next(1, 8 * 4096);
                ulong align = 1UL << rnd.Next(12, 18);
                ulong addr = v.Vmalloc(size, align, Gfp.Kernel);
                if (addr == 0 || addr % align != 0) { Interlocked.Increment(ref errors); continue; }
                long s = ((long)t << 32) | (long)i;
                sys.Kernel.Write(addr, s);
                live.Add((addr, s));
            }
            foreach (var (a, stamp) in live)
            {
                if (sys.Kernel.Read<long>(a) != stamp) Interlocked.Increment(ref errors);
                v.Vfree(a);
            }
        })).ToArray();
        foreach (var th in threads) th.Start();
        foreach (var th in threads) th.Join();
        Assert.Equal(0, errors);
        AssertRangeIntact(v);
    }

    [Fact]
    public void GuardPageAndFreedAreaFaultAsOopses()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.Vmalloc(2 * Page);
        sys.Kernel.Write(a + 2 * Page - 1, (byte)1);
        var guard = Assert.Throws<KernelOopsException>(() => sys.Kernel.Write(a + 2 * Page, (byte)1));
        Assert.Contains("BUG: unable to handle page fault for address", guard.Message + guard.Report);
        v.Vfree(a);
        Assert.Throws<KernelOopsException>(() => sys.Kernel.Read<byte>(a));
    }

    [Fact]
    public void MisuseIsRejectedWithTheAddress()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.Vmalloc(3 * Page);
        AssertInteriorFreeRejected(v, a);
        Assert.Throws<MemoryCorruptionException>(() => v.Vfree(VmallocAllocator.VmallocStart + (1UL << 40)));
        Assert.Throws<MemoryCorruptionException>(() => v.Vunmap(a));
        v.Vfree(a);
        AssertDoubleFreeRejected(v, a);
        AssertRangeIntact(v);
    }

    /// <summary>vfree of a pointer one page into the area at <paramref name="a"/> is refused, naming that pointer.</summary>
    internal static void AssertInteriorFreeRejected(VmallocAllocator v, ulong a)
    {
        var interior = Assert.Throws<MemoryCorruptionException>(() => v.Vfree(a + Page));
        Assert.Contains($"0x{a + Page:x}", interior.Message);
    }

    /// <summary>A second vfree of the area at <paramref name="a"/> is refused as a double free.</summary>
    internal static void AssertDoubleFreeRejected(VmallocAllocator v, ulong a)
    {
        var twice = Assert.Throws<MemoryCorruptionException>(() => v.Vfree(a));
        Assert.Contains("double free", twice.Message);
    }

    [Fact]
    public void VmallocInfoAndMeminfoFormats()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.Vmalloc(5 * Page);
        string info = v.VmallocInfo();
        var line = info.Split('\n').First(l => l.StartsWith($"0x{a:x16}", StringComparison.Ordinal));
        Assert.Matches(new Regex(@"^0x[0-9a-f]{16}-0x[0-9a-f]{16} +24576 \S+ pages=5 vmalloc N0=5$"), line);
        Assert.Contains(nameof(VmallocInfoAndMeminfoFormats), line);
        Assert.Contains($"{"VmallocTotal:",-16}{34359738367,8} kB", v.MeminfoLines());
        Assert.Contains($"{"VmallocUsed:",-16}{20,8} kB", v.MeminfoLines());
        v.Vfree(a);
        Assert.Matches(new Regex($"^0x{a:x16}-0x{a + 6 * Page:x16} +24576 unpurged vm_area$", RegexOptions.Multiline), v.VmallocInfo());
    }

    [Fact]
    public void EverythingFreedReturnsThePageAllocatorToItsState()
    {
        using var sys = NewSystem();
        AssertCyclesEndInTheSameState(sys, () => Enumerable.Range(0, 64).Select(i => sys.Vmalloc.Vzalloc((ulong)(i + 1) * 1000)).ToList());
    }

    [Fact]
    public void KvmallocVreallocAndSequences()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong small = v.Kvmalloc(100);
        Assert.False(VmallocAllocator.IsVmallocAddr(small));
        ulong big = v.Kvmalloc(1 << 20);
        Assert.True(VmallocAllocator.IsVmallocAddr(big));
        v.Kvfree(small);

        var data = new byte[3 * 4096 + 123];
        new Random(2).NextBytes(data);
        sys.Kernel.WriteBytes(big, data);
        ulong grown = v.Vrealloc(big, 2 << 20);
        var back = new byte[data.Length];
        sys.Kernel.ReadBytes(grown, back);
        Assert.Equal(data, back);

        var seq = v.AsSequence(grown, (ulong)data.Length);
        Assert.Equal(data.Length, seq.Length);
        Assert.Equal(data, seq.ToArray());
        var reader = new SequenceReader<byte>(seq);
        Assert.True(reader.TryAdvanceTo(data[5000], advancePastDelimiter: false) || true);
        v.Kvfree(grown);
        AssertRangeIntact(v);
    }

    [Fact]
    public void ContiguousSpanOverScatteredFramesOnMemfd()
    {
        using var sys = NewSystem(ArenaBacking.MemFd);
        var v = sys.Vmalloc;
        Assert.True(v.HasHostMappings);
        // Scatter the frames: interleave with other allocations.
        var holes = new List<nint>();
        for (int i = 0; i < 16; i++) holes.Add((nint)sys.Pages.AllocPages(Gfp.Kernel, 0));
        for (int i = 0; i < holes.Count; i += 2) sys.Pages.FreePages((PageFrame*)holes[i], 0);
        ulong a = v.Vmalloc(8 * Page);
        Span<byte> span = v.AsSpan(a);
        Assert.Equal(8 * 4096, span.Length);
        for (int i = 0; i < 8; i++)
        {
            span[i * 4096 + 7] = (byte)(i + 1);
            PageFrame* frame = v.VmallocToPage(a + (ulong)i * Page);
            Assert.Equal(i + 1, sys.Pages.PageAddress(frame)[7]);          // span -> direct map
            sys.Pages.PageAddress(frame)[9] = (byte)(0x40 + i);
            Assert.Equal(0x40 + i, span[i * 4096 + 9]);                    // direct map -> span
            Assert.Equal(0x40 + i, sys.Kernel.Read<byte>(a + (ulong)i * Page + 9)); // and the MMU view
        }
        v.Vfree(a);
        foreach (var p in holes.Where((_, i) => i % 2 == 1)) sys.Pages.FreePages((PageFrame*)p, 0);
    }

    [Fact]
    public void RingBufferRecordCrossingTheEndReadsBackContiguous()
    {
        foreach (var backing in new[] { ArenaBacking.NativeMemory, ArenaBacking.MemFd })
        {
            using var sys = NewSystem(backing);
            using var ring = new RingBuffer(sys.Vmalloc, 2);
            var filler = new byte[8192 - 4 - 100];
            Assert.True(ring.TryWrite(filler));
            Assert.Equal(filler.Length, ring.TryRead()!.Length);
            var record = Enumerable.Range(0, 1000).Select(i => (byte)i).ToArray(); // starts 100 bytes before the end
            Assert.True(ring.TryWrite(record));
            if (backing == ArenaBacking.MemFd) Assert.Equal(record, ring.PeekContiguous().ToArray());
            Assert.Equal(record, ring.TryRead());
            Assert.Null(ring.TryRead());
        }
    }

    /// <summary>
    /// The caller shown in vmallocinfo comes from the compiler's caller information (file, member, line), so a
    /// vmalloc/vfree pair walks no stack and allocates no managed bytes once the call site is known; on the memfd
    /// arena too, where the area is also mapped for real.
    /// </summary>
    [Theory]
    [InlineData(ArenaBacking.NativeMemory)]
    [InlineData(ArenaBacking.MemFd)]
    public void VmallocNamesItsCallerWithoutAStackWalkOrManagedBytes(ArenaBacking backing)
    {
        using var sys = NewUncheckedSystem(backing);
        var v = sys.Vmalloc;
        void Pairs()
        {
            for (int i = 0; i < 200; i++)
            {
                ulong a = v.Vmalloc((ulong)(1 + i % 16) * Page);
                v.Vfree(a);
            }
        }
        Pairs();
        Pairs();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Pairs();
        long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, bytes);

        ulong kept = v.Vzalloc(3 * Page);
        string info = v.VmallocInfo();
        Assert.Matches(@"VmallocTests\.VmallocNamesItsCallerWithoutAStackWalkOrManagedBytes:\d+ pages=3 vmalloc N0=3\n", info);
        v.Vfree(kept);
        AssertRangeIntact(v);
    }
}
