using System.Diagnostics;
using System.Text.RegularExpressions;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Vmalloc;

namespace Allocators.Tests.Vmalloc;

/// <summary>vmalloc_huge: areas of 2 MiB and more backed by split order-9 blocks and mapped with 2 MiB PMD entries.</summary>
public unsafe class VmallocHugeTests
{
    private const ulong Page = 4096;
    private const ulong Pmd = 2UL << 20;

    private static MemorySystem NewSystem(ArenaBacking backing = ArenaBacking.NativeMemory, long size = 64L << 20)
        => VmallocTests.NewSystem(backing, size);

    private static void AssertRangeIntact(VmallocAllocator v) => VmallocTests.AssertRangeIntact(v);

    /// <summary>Frees <paramref name="areas"/> and checks that the whole vmalloc range is free again.</summary>
    private static void FreeAndAssertRangeIntact(VmallocAllocator v, params ulong[] areas)
    {
        foreach (ulong a in areas) v.Vfree(a);
        AssertRangeIntact(v);
    }

    /// <summary>Every 2 MiB block of [a, a + size) is one present PMD leaf over a 512-page-aligned pfn.</summary>
    private static void AssertHugeMapped(MemorySystem sys, ulong a, ulong size)
    {
        for (ulong off = 0; off < size; off += Pmd)
        {
            PageTableEntry e = sys.Kernel.GetPte(a + off);
            Assert.True(e.Present && e.Huge, $"0x{a + off:x} is not mapped by a 2 MiB entry ({e.Value:x})");
            Assert.Equal(0UL, e.Pfn % 512);
            Assert.DoesNotContain("PTE", sys.Kernel.DumpPageTable(a + off));
        }
    }

    private static void AssertNotHuge(MemorySystem sys, ulong a, ulong size)
    {
        for (ulong off = 0; off < size; off += Page)
        {
            PageTableEntry e = sys.Kernel.GetPte(a + off);
            Assert.True(e.Present && !e.Huge, $"0x{a + off:x} should be a 4 KiB mapping ({e.Value:x})");
        }
    }

    /// <summary>Runs <paramref name="body"/> on <paramref name="count"/> new threads (argument: the thread's index) and waits for all.</summary>
    private static void RunOnThreads(int count, Action<int> body)
    {
        var threads = Enumerable.Range(0, count).Select(t => new Thread(() => body(t))).ToArray();
        foreach (var th in threads) th.Start();
        foreach (var th in threads) th.Join();
    }

    private static string InfoLine(VmallocAllocator v, ulong a)
        => v.VmallocInfo().Split('\n').First(l => l.StartsWith($"0x{a:x16}", StringComparison.Ordinal));

    [Fact]
    public void HugeAreaIsAlignedRoundedAndMappedWithPmdEntries()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.VmallocHuge(2 * Pmd + 5000); // 4 MiB + 5000 -> three 2 MiB blocks
        Assert.NotEqual(0UL, a);
        Assert.Equal(0UL, a % Pmd);
        Assert.Equal(3 * Pmd, v.AreaSize(a));
        AssertHugeMapped(sys, a, 3 * Pmd);
        Assert.Equal(3 * 512, v.VmallocPages);
        Assert.Contains($"{"VmallocUsed:",-16}{6144,8} kB", v.MeminfoLines());
        // pages= counts 4 KiB pages; the size includes the guard page; no word the kernel would not print.
        Assert.Matches(new Regex($@"^0x{a:x16}-0x{a + 3 * Pmd + Page:x16} +{3 * Pmd + Page} \S+ pages=1536 vmalloc N0=1536$"), InfoLine(v, a));

        // vmalloc_to_page / vmalloc_to_pfn give the 4 KiB subpage of the 2 MiB block, which is an order-0 page of its own.
        foreach (ulong off in new[] { 0UL, Page, Pmd - Page, Pmd, Pmd + 77 * Page + 5, 3 * Pmd - 1 })
        {
            PageTableEntry pmd = sys.Kernel.GetPte(a + off);
            ulong pfn = pmd.Pfn + (off % Pmd) / Page;
            PageFrame* page = v.VmallocToPage(a + off);
            Assert.True(page == sys.Memory.PfnToPage(pfn), $"wrong page at offset 0x{off:x}");
            Assert.Equal(pfn, v.VmallocToPfn(a + off));
            Assert.Equal(0, page->Order);
            Assert.Equal(1, page->RefCount);
            Assert.False(page->Has(PageFlags.Head) || page->Has(PageFlags.Tail));
        }
        Assert.True(v.VmallocToPage(a + 3 * Pmd) == null); // the guard page
        FreeAndAssertRangeIntact(v, a);
    }

    [Fact]
    public void AccessesAcrossTwoMebibyteBoundariesGoThroughTheHugeEntries()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.VmallocHuge(2 * Pmd, Gfp.Kernel | Gfp.Zero);
        AssertHugeMapped(sys, a, 2 * Pmd);
        Assert.Equal(0L, sys.Kernel.Read<long>(a + Pmd + 12345 * 8));
        sys.Kernel.Write(a + Pmd - 4, 0x1122334455667788UL); // straddles the two PMD entries
        Assert.Equal(0x1122334455667788UL, sys.Kernel.Read<ulong>(a + Pmd - 4));
        Assert.Equal(0x88, sys.Pages.PageAddress(v.VmallocToPage(a + Pmd - 4))[Page - 4]); // low half in the first block
        Assert.Equal(0x11, sys.Pages.PageAddress(v.VmallocToPage(a + Pmd))[3]);           // high half in the second
        var data = new byte[3 * Page + 17];
        new Random(5).NextBytes(data);
        sys.Kernel.WriteBytes(a + Pmd - 2 * Page, data);
        var back = new byte[data.Length];
        sys.Kernel.ReadBytes(a + Pmd - 2 * Page, back);
        Assert.Equal(data, back);
        // The bytes sit in the physical pages vmalloc_to_page names.
        byte* low = sys.Pages.PageAddress(v.VmallocToPage(a + Pmd - 2 * Page));
        byte* high = sys.Pages.PageAddress(v.VmallocToPage(a + Pmd));
        Assert.Equal(data[0], low[0]);
        Assert.Equal(data[2 * (int)Page], high[0]);
        FreeAndAssertRangeIntact(v, a);
    }

    [Fact]
    public void MemfdArenaGivesOneContiguousSpanOverTheHugeArea()
    {
        using var sys = NewSystem(ArenaBacking.MemFd);
        var v = sys.Vmalloc;
        Assert.True(v.HasHostMappings);
        ulong a = v.VmallocHuge(2 * Pmd);
        AssertHugeMapped(sys, a, 2 * Pmd);
        Span<byte> span = v.AsSpan(a);
        Assert.Equal((int)(2 * Pmd), span.Length);
        sys.Kernel.Write(a + Pmd - 4, 0xa1b2c3d4e5f60718UL);
        Assert.Equal(0xa1b2c3d4e5f60718UL, BitConverter.ToUInt64(span.Slice((int)Pmd - 4, 8)));
        for (int i = 0; i < 2 * 512; i += 37)
        {
            span[i * (int)Page + 11] = (byte)(i + 3);
            Assert.Equal((byte)(i + 3), sys.Kernel.Read<byte>(a + (ulong)i * Page + 11));
            Assert.Equal((byte)(i + 3), sys.Pages.PageAddress(v.VmallocToPage(a + (ulong)i * Page))[11]);
        }
        var seq = v.AsSequence(a, 2 * Pmd);
        Assert.Equal((long)(2 * Pmd), seq.Length);
        Assert.True(seq.IsSingleSegment || seq.First.Length >= (int)Pmd); // physically contiguous 2 MiB runs
        FreeAndAssertRangeIntact(v, a);
    }

    [Fact]
    public void SmallRequestsThroughTheHugeApiUseFourKibPages()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.VmallocHuge(Pmd - Page);
        Assert.NotEqual(0UL, a);
        Assert.Equal(Pmd - Page, v.AreaSize(a));
        AssertNotHuge(sys, a, Pmd - Page);
        Assert.Matches(new Regex(@" pages=511 vmalloc N0=511$"), InfoLine(v, a));
        sys.Kernel.Write(a + Pmd - Page - 8, 42L);
        Assert.Equal(42L, sys.Kernel.Read<long>(a + Pmd - Page - 8));
        FreeAndAssertRangeIntact(v, a);
    }

    [Fact]
    public void WithoutOrder9BlocksTheAreaFallsBackToOrder0Pages()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong warm = v.Vmalloc(Page); // the vmap_area cache and the first tables exist before memory is fragmented
        // Take every free page (high ones too: vmalloc may use them), then give back all but one page of every 2 MiB block.
        sys.Pages.DrainAllPages();
        var taken = new List<nint>();
        for (PageFrame* p; (p = sys.Pages.AllocPages(Gfp.NoWait | Gfp.NoWarn | Gfp.MemAlloc | Gfp.HighMem, 0)) != null;) taken.Add((nint)p);
        var held = new Dictionary<ulong, nint>();
        foreach (nint p in taken)
        {
            if (!held.TryAdd(((PageFrame*)p)->Pfn >> 9, p)) sys.Pages.FreePages((PageFrame*)p, 0);
        }
        sys.Pages.DrainAllPages();
        PageFrame* probe = sys.Pages.AllocPages(Gfp.Kernel | Gfp.HighMem | Gfp.NoWarn | Gfp.NoRetry, 9);
        Assert.True(probe == null, "the arena still has an order-9 block");

        long failures = v.Failures;
        ulong size = 2 * Pmd + 8000;
        ulong a = v.VmallocHuge(size);
        Assert.NotEqual(0UL, a);
        Assert.Equal(failures, v.Failures); // the fallback is not a failure
        ulong pages = (size + Page - 1) / Page;
        Assert.Equal(pages * Page, v.AreaSize(a)); // the real size, not rounded to 2 MiB
        AssertNotHuge(sys, a, pages * Page);
        Assert.Matches(new Regex($@"^0x{a:x16}-0x{a + (pages + 1) * Page:x16} +\d+ \S+ pages={pages} vmalloc N0={pages}$"), InfoLine(v, a));
        sys.Kernel.Write(a + Pmd - 4, 0x0102030405060708UL);
        Assert.Equal(0x0102030405060708UL, sys.Kernel.Read<ulong>(a + Pmd - 4));
        v.Vfree(a);
        v.Vfree(warm);
        foreach (nint p in held.Values) sys.Pages.FreePages((PageFrame*)p, 0);
        AssertRangeIntact(v);
    }

    [Fact]
    public void EmptyPteTableLeftBySmallAreasIsFreedForAHugeMappingAndBack()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        using var process = sys.CreateAddressSpace();
        ulong small = v.Vmalloc(Page);
        Assert.Equal(VmallocAllocator.VmallocStart, small);
        sys.Kernel.Write(small, 7L);
        Assert.Equal(7L, process.ReadKernel<long>(small)); // the process walks the same kernel tables
        long tables = sys.Kernel.PageTablePages;
        v.Vfree(small);
        v.PurgeVmapAreas();
        Assert.Equal(tables, sys.Kernel.PageTablePages); // vunmap keeps kernel tables

        ulong huge = v.VmallocHuge(Pmd);
        Assert.Equal(small, huge); // the same 2 MiB region
        AssertHugeMapped(sys, huge, Pmd);
        Assert.Equal(tables - 1, sys.Kernel.PageTablePages); // the empty PTE table is gone
        sys.Kernel.Write(huge + Pmd - 8, 99L);
        Assert.Equal(99L, process.ReadKernel<long>(huge + Pmd - 8));
        v.Vfree(huge);
        Assert.Throws<KernelOopsException>(() => process.ReadKernel<long>(huge));
        v.PurgeVmapAreas();
        Assert.False(sys.Kernel.GetPte(huge).Present);

        // And back: small areas in the region get a new PTE table.
        ulong s1 = v.Vmalloc(Page);
        ulong s2 = v.Vmalloc(3 * Page);
        Assert.Equal(VmallocAllocator.VmallocStart, s1);
        Assert.Equal(tables, sys.Kernel.PageTablePages);
        AssertNotHuge(sys, s1, Page);
        AssertNotHuge(sys, s2, 3 * Page);
        sys.Kernel.Write(s2 + 3 * Page - 8, 5L);
        Assert.Equal(5L, process.ReadKernel<long>(s2 + 3 * Page - 8));
        FreeAndAssertRangeIntact(v, s1, s2);
    }

    [Fact]
    public void KernelHugePmdPrimitiveRefusesATableInUseAndRejectsBadInput()
    {
        using var sys = NewSystem();
        var k = sys.Kernel;
        ulong region = VmallocAllocator.VmallocStart + (1UL << 40);
        PageFrame* block = sys.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 9);
        PageFrame* one = sys.Pages.AllocPages(Gfp.Kernel, 0);
        try
        {
            k.MapKernelPage(region + 5 * Page, one, PteFlags.PageKernel);
            long tables = k.PageTablePages;
            Assert.False(k.MapKernelHugePmd(region, block, PteFlags.PageKernel)); // the PTE table still maps a page
            Assert.Equal(tables, k.PageTablePages);
            Assert.True(k.TranslateToPage(region + 5 * Page) == one);

            var unaligned = Assert.Throws<ArgumentException>(() => k.MapKernelHugePmd(region + Page, block, PteFlags.PageKernel));
            Assert.Contains($"0x{region + Page:x}", unaligned.Message);
            Assert.Throws<ArgumentException>(() => k.MapKernelHugePmd(region + Pmd, block + 1, PteFlags.PageKernel));
            Assert.Throws<ArgumentException>(() => k.MapKernelHugePmd(region + Pmd, block, PteFlags.PageKernel | PteFlags.User));
            Assert.False(k.GetPte(region + Pmd).Present);

            Assert.Equal(1, k.UnmapKernelRange(region + 5 * Page, Page));
            Assert.True(k.MapKernelHugePmd(region, block, PteFlags.PageKernel));
            Assert.Equal(tables - 1, k.PageTablePages);
            Assert.True(k.TranslateToPage(region + 5 * Page + 9) == block + 5);
            Assert.Throws<InvalidOperationException>(() => k.MapKernelHugePmd(region, block, PteFlags.PageKernel));
            var over = Assert.Throws<InvalidOperationException>(() => k.MapKernelPage(region + 7 * Page, one, PteFlags.PageKernel));
            Assert.Contains($"0x{region + 7 * Page:x}", over.Message);

            // Unmapping part of a 2 MiB entry is refused with nothing changed.
            var partial = Assert.Throws<ArgumentException>(() => k.UnmapKernelRange(region + Page, Page));
            Assert.Contains($"0x{region + Page:x}", partial.Message);
            Assert.Throws<ArgumentException>(() => k.UnmapKernelRange(region - Page, 2 * Page));
            Assert.True(k.GetPte(region).Huge);
            k.Write(region + Pmd - 8, 3L);
            Assert.Equal(3L, *(long*)(sys.Pages.PageAddress(block) + Pmd - 8));

            Assert.Equal(512, k.UnmapKernelRange(region - Pmd, 3 * Pmd));
            Assert.False(k.GetPte(region).Present);
            Assert.Throws<KernelOopsException>(() => k.Read<long>(region + Pmd - 8));
        }
        finally
        {
            sys.Pages.FreePages(one, 0);
            sys.Pages.FreePages(block, 9);
        }
    }

    [Fact]
    public void GuardPageAndFreedHugeAreaOopsAndMisuseIsRejected()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.VmallocHuge(Pmd);
        sys.Kernel.Write(a + Pmd - 1, (byte)1);
        var guard = Assert.Throws<KernelOopsException>(() => sys.Kernel.Write(a + Pmd, (byte)1));
        Assert.Contains("BUG: unable to handle page fault for address", guard.Report);
        VmallocTests.AssertInteriorFreeRejected(v, a);
        Assert.True(sys.Kernel.GetPte(a).Huge); // the rejected call changed nothing
        v.Vfree(a);
        Assert.Throws<KernelOopsException>(() => sys.Kernel.Read<byte>(a));
        Assert.Throws<KernelOopsException>(() => sys.Kernel.Read<byte>(a + Pmd / 2));
        VmallocTests.AssertDoubleFreeRejected(v, a);
        AssertRangeIntact(v);
    }

    [Fact]
    public void EverythingFreedReturnsThePageAllocatorToItsState()
    {
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        VmallocTests.AssertCyclesEndInTheSameState(sys, () =>
        {
            var live = new List<ulong>
            {
                v.VmallocHuge(2 * Pmd + 5000, Gfp.Kernel | Gfp.Zero),
                v.Vmalloc(3 * Page),
                v.VmallocHuge(Pmd),
                v.VmallocHuge(Pmd / 2),
                v.Vzalloc(Pmd + Page),
            };
            Assert.Equal(2, live.Count(a => a != 0 && sys.Kernel.GetPte(a).Huge));
            foreach (ulong a in live.Where(a => a != 0)) sys.Kernel.Write(a + v.AreaSize(a) - 8, a);
            return live;
        });
    }

    [Fact]
    public void HugeAndSmallAreasFromSeveralThreadsAtOnce()
    {
        using var sys = NewSystem(size: 128L << 20);
        var v = sys.Vmalloc;
        using var process = sys.CreateAddressSpace();
        int errors = 0;
        long hugeAreas = 0;
        var clock = Stopwatch.StartNew();
        RunOnThreads(3, t =>
        {
            var rnd = new Random(t);
            var live = new List<(ulong A, ulong Size, long Stamp)>();
            for (int i = 0; i < 400 && clock.ElapsedMilliseconds < 1500; i++)
            {
                if (live.Count > 4 || (live.Count > 0 && rnd.Next(2) == 0))
                {
                    var (a, size, stamp) = live[0];
                    live.RemoveAt(0);
                    long first = rnd.Next(2) == 0 ? process.ReadKernel<long>(a) : sys.Kernel.Read<long>(a);
                    if (first != stamp || sys.Kernel.Read<long>(a + size - 8) != ~stamp) Interlocked.Increment(ref errors);
                    v.Vfree(a);
                    continue;
                }
                bool huge = rnd.Next(2) == 0;
                ulong want = huge ? Pmd + (ulong)rnd.Next(0, 2) * Pmd + (ulong)rnd.Next(0, 4096) : (ulong)rnd.Next(1, 16 * 4096);
                ulong addr = huge ? v.VmallocHuge(want) : v.Vmalloc(want);
                if (addr == 0) { Interlocked.Increment(ref errors); continue; }
                ulong areaSize = v.AreaSize(addr);
                if (huge && (addr % Pmd != 0 || !sys.Kernel.GetPte(addr).Huge)) Interlocked.Increment(ref errors);
                if (huge) Interlocked.Increment(ref hugeAreas);
                long s = ((long)t << 32) | (long)i;
                sys.Kernel.Write(addr, s);
                sys.Kernel.Write(addr + areaSize - 8, ~s);
                live.Add((addr, areaSize, s));
            }
            foreach (var (a, size, stamp) in live)
            {
                if (sys.Kernel.Read<long>(a) != stamp || process.ReadKernel<long>(a + size - 8) != ~stamp) Interlocked.Increment(ref errors);
                v.Vfree(a);
            }
        });
        Assert.Equal(0, errors);
        Assert.True(hugeAreas > 0);
        AssertRangeIntact(v);
    }

    [Fact]
    public void ProcessThreadsRacingOnTheirFirstKernelAccessAllSucceed()
    {
        // vmalloc_fault: a thread whose walk missed the PGD entry another thread has just copied must retry, not oops.
        // A stress check: the window is narrow (it opened reliably only on a loaded machine, where a thread is
        // preempted between its walk and the fault handler).
        using var sys = NewSystem();
        var v = sys.Vmalloc;
        ulong a = v.VmallocHuge(Pmd);
        sys.Kernel.Write(a + Pmd / 2, 0x5eedL);
        int errors = 0;
        for (int round = 0; round < 50; round++)
        {
            using var process = sys.CreateAddressSpace();
            int ready = 0;
            RunOnThreads(2, _ =>
            {
                Interlocked.Increment(ref ready);
                while (Volatile.Read(ref ready) < 2) Thread.SpinWait(1);
                try
                {
                    if (process.ReadKernel<long>(a + Pmd / 2) != 0x5eedL) Interlocked.Increment(ref errors);
                }
                catch (KernelOopsException)
                {
                    Interlocked.Increment(ref errors);
                }
            });
        }
        Assert.Equal(0, errors);
        Assert.Empty(sys.Kernel.Log);
        FreeAndAssertRangeIntact(v, a);
    }

    [Fact]
    public void DisposingWithLiveHugeAreasFreesEverything()
    {
        var sys = NewSystem();
        ulong a = sys.Vmalloc.VmallocHuge(2 * Pmd);
        ulong b = sys.Vmalloc.Vmalloc(Page);
        sys.Kernel.Write(a + Pmd, 1L);
        sys.Kernel.Write(b, 2L);
        sys.Dispose();
        Assert.True(sys.IsDisposed);
    }
}
