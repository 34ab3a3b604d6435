using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Tests.Slab;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// __GFP_NOFAIL as the kernel's slow path treats it: refused without direct reclaim, given the reserves once reclaim
/// has failed, and never a silent endless wait (stall reports through Warn, an event and the meter).
/// </summary>
public sealed unsafe class NoFailTests
{
    [Theory]
    [InlineData(Gfp.Atomic | Gfp.NoFail, 0)]
    [InlineData(Gfp.NoWait | Gfp.NoFail, 0)]
    [InlineData(Gfp.NoFail, 1)]
    [InlineData(Gfp.Atomic | Gfp.NoFail | Gfp.NoWarn | Gfp.Zero, 0)]
    public void NoFailWithoutDirectReclaimIsRefusedAndChangesNothing(Gfp gfp, int order)
    {
        var warnings = new List<string>();
        using var sys = NewSystem(16, warn: warnings.Add);
        PageAllocator pa = sys.Pages;
        PageFrame* warm = pa.AllocPages(Gfp.Kernel, 0); // per-thread lists in use, as in a running system
        FreeListState before = Snapshot(pa);
        long failures = pa.AllocFailures;

        var e = Assert.Throws<ArgumentException>(() => pa.AllocPages(gfp, order));
        Assert.Equal("gfp", e.ParamName);
        Assert.Contains(gfp.Describe(), e.Message);
        Assert.Contains("__GFP_DIRECT_RECLAIM", e.Message);
        Assert.Throws<ArgumentException>(() => pa.ThisThread().AllocPages(gfp, order));
        Assert.Throws<ArgumentException>(() => pa.AllocPagesNode(0, gfp, order));

        AssertSameState(before, Snapshot(pa));
        Assert.Equal(failures, pa.AllocFailures);
        Assert.Equal(0, pa.Warnings);
        Assert.Empty(warnings);
        pa.FreePages(warm, 0);
    }

    [Fact]
    public void VmallocRefusesNoFailWithoutDirectReclaimBeforeReservingAnything()
    {
        using var sys = NewSystem(16);
        var v = sys.Vmalloc;
        string areas = v.VmallocInfo();
        FreeListState before = Snapshot(sys.Pages);

        var e = Assert.Throws<ArgumentException>(() => v.Vmalloc(3 * 4096, 4096, Gfp.Atomic | Gfp.NoFail));
        Assert.Contains("GFP_ATOMIC|__GFP_NOFAIL", e.Message);

        Assert.Equal(areas, v.VmallocInfo());
        AssertSameState(before, Snapshot(sys.Pages));
    }

    /// <summary>
    /// 16 MiB: min watermark 128 pages. Below half of it, neither the min mark nor the reserve share a NOFAIL request
    /// got before would ever let it through; the kernel's OOM path gives a small NOFAIL request every free page.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    public void NoFailOrder0TakesAnyFreePageBelowTheMinWatermark(int leaveFree)
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.InRange(leaveFree, 1, normal.WatermarkMin / 2);
        var all = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn);
        for (int i = 0; i < leaveFree; i++)
        {
            pa.FreePages((PageFrame*)all[^1], 0);
            all.RemoveAt(all.Count - 1);
        }
        pa.DrainAllPages();
        Assert.Equal(leaveFree, pa.NrFreePages);
        long failures = pa.AllocFailures;

        nint got = 0;
        SlabTestSupport.RunWithDeadline("order-0 NoFail allocation with free pages below the min watermark",
            () => got = (nint)pa.AllocPages(Gfp.Kernel | Gfp.NoFail, 0),
            onTimeout: () => FreeAllAndWait(pa, all, () => Volatile.Read(ref got) != 0), seconds: 10);

        Assert.True(got != 0 && ((PageFrame*)got)->Has(PageFlags.PfMemAlloc), "a page taken below the watermarks is marked pfmemalloc");
        Assert.Equal(leaveFree - 1, pa.NrFreePages + pa.PcpPages);
        AssertWaitedNoFailSucceeded(pa, got, failures, all);
        Assert.False(((PageFrame*)got)->Has(PageFlags.PfMemAlloc));
    }

    [Fact]
    public void NoFailWaitingForMemoryReportsStallsThenCompletesWhenAnotherThreadFrees()
    {
        var interval = TimeSpan.FromMilliseconds(200);
        var warnings = new ConcurrentQueue<string>();
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow },
            PageAllocator = new PageAllocatorOptions
            {
                Warn = warnings.Enqueue, FreePageReportingDelay = TimeSpan.Zero, StallWarningInterval = interval,
            },
        });
        PageAllocator pa = sys.Pages;
        var all = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn);
        Assert.Equal(0, pa.NrFreePages + pa.PcpPages);
        long failures = pa.AllocFailures;
        var stalls = new ConcurrentQueue<AllocationStall>();
        using var stalled = new ManualResetEventSlim();
        pa.AllocationStalled += s => { stalls.Enqueue(s); stalled.Set(); };

        nint got = 0;
        var clock = Stopwatch.StartNew();
        var waiter = new Thread(() => Volatile.Write(ref got, (nint)pa.AllocPages(Gfp.Kernel | Gfp.NoFail, 0))) { IsBackground = true };
        waiter.Start();
        try
        {
            Assert.True(stalled.Wait(TimeSpan.FromSeconds(5)), "no stall reported while the NoFail request waited");
            Assert.True(clock.Elapsed >= interval, $"stall reported after {clock.Elapsed}, before the {interval} interval");
            Assert.True(waiter.IsAlive, "the request must keep waiting while nothing is free");

            Assert.True(stalls.TryPeek(out AllocationStall? stall));
            Assert.Equal(Gfp.Kernel | Gfp.NoFail, stall.Gfp);
            Assert.Equal(0, stall.Order);
            Assert.True(stall.Elapsed >= interval, $"elapsed {stall.Elapsed}");
            Assert.Matches(@"^allocators: page allocation stalls for \d+ms, order:0, mode:0x[0-9a-f]+\(GFP_KERNEL\|__GFP_NOFAIL\), nodemask=\(null\)$", stall.Text);
            Assert.Contains(stall.Text, warnings);
            Assert.True(pa.AllocStalls >= 1);
            Assert.True(MeteredStalls(pa.Id) >= 1, "the allocators.pages.alloc_stalls counter did not record the stall");

            // One page freed on another thread (onto its per-thread list) is enough for an order-0 request.
            nint last = all[^1];
            all.RemoveAt(all.Count - 1);
            var freer = new Thread(() => pa.FreePages((PageFrame*)last, 0));
            freer.Start();
            freer.Join();
            Assert.True(waiter.Join(TimeSpan.FromSeconds(10)), "the NoFail request did not complete after a page was freed");
        }
        finally
        {
            if (waiter.IsAlive) FreeAllAndWait(pa, all, () => !waiter.IsAlive);
        }
        AssertWaitedNoFailSucceeded(pa, got, failures, all);
    }

    [Fact]
    public void StallIntervalMustBePositive()
    {
        using var memory = new PhysicalMemory(new PhysicalMemoryOptions { Size = 16 * MiB });
        foreach (TimeSpan interval in new[] { TimeSpan.Zero, TimeSpan.FromSeconds(-1) })
        {
            var e = Assert.Throws<ArgumentException>(() => new PageAllocator(memory, new PageAllocatorOptions { StallWarningInterval = interval }));
            Assert.Contains("StallWarningInterval", e.Message);
        }
    }

    /// <summary>Frees every page of <paramref name="pages"/> so that a stuck request can finish, and waits until it has.</summary>
    private static void FreeAllAndWait(PageAllocator pa, List<nint> pages, Func<bool> finished)
    {
        foreach (nint p in pages) pa.FreePages((PageFrame*)p, 0);
        pages.Clear();
        SpinWait.SpinUntil(finished, TimeSpan.FromSeconds(10));
    }

    /// <summary>The allocators.pages.alloc_stalls value the meter observes for one system.</summary>
    private static long MeteredStalls(int systemId)
    {
        long total = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == AllocatorsMetrics.MeterName && instrument.Name == "allocators.pages.alloc_stalls")
                l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var t in tags)
                if (t.Key == "allocators.system" && (int)t.Value! == systemId) total += value;
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return total;
    }
}
