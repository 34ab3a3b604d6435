using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// <see cref="PageAllocator.ThisThread"/>: the same pages, validation, counters and fallbacks as the plain calls,
/// no managed bytes, and safe against drains from other threads.
/// </summary>
public sealed unsafe class PageThisThreadTests
{
    [Fact]
    public void PairsOfEveryOrderComeBackAndAllocateNoManagedBytes()
    {
        using var sys = NewSystem(32);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        long allocatedBefore = pa.PagesAllocated;
        void Run()
        {
            var t = pa.ThisThread();
            for (int i = 0; i < 20_000; i++)
            {
                int order = i % 6; // 4 and 5 are beyond the per-thread lists: the general path
                PageFrame* p = t.AllocPages(Gfp.Kernel, order);
                t.FreePages(p, order);
            }
        }
        Run();
        Run();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(pa.PagesAllocated, pa.PagesFreed);
        Assert.True(pa.PagesAllocated - allocatedBefore >= 3 * 20_000);
        pa.DrainAllPages();
        Assert.Equal(boot, pa.BuddyInfo());
    }

    [Fact]
    public void PagesMixWithThePlainCallsAndStayStamped()
    {
        using var sys = NewSystem(32);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        var t = pa.ThisThread();
        var blocks = new List<(nint Page, int Order)>();
        for (int i = 0; i < 400; i++)
        {
            int order = i % 4;
            PageFrame* p = i % 3 == 0 ? pa.AllocPages(Gfp.Kernel, order) : t.AllocPages(Gfp.Kernel | (i % 5 == 0 ? Gfp.Zero : 0), order);
            Assert.True(p != null);
            if (i % 5 == 0 && i % 3 != 0) Assert.True(IsZero(pa, p, order));
            Stamp(pa, p, order, (ulong)i);
            blocks.Add(((nint)p, order));
        }
        for (int i = 0; i < blocks.Count; i++)
        {
            var (p, order) = blocks[i];
            CheckStamp(pa, (PageFrame*)p, order, (ulong)i);
            if (i % 2 == 0) t.FreePages((PageFrame*)p, order);
            else pa.FreePages((PageFrame*)p, order);
        }
        PageFrame* compound = t.AllocPages(Gfp.Kernel | Gfp.Comp, 2);
        Assert.True(compound->Has(PageFlags.Head));
        t.FreePages(compound, 2);
        pa.DrainAllPages();
        Assert.Equal(boot, pa.BuddyInfo());
    }

    [Fact]
    public void MisuseThroughTheHandleIsRejectedAndChangesNothing()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        PageFrame* p = pa.ThisThread().AllocPages(Gfp.Kernel, 1);
        PageFrame* freed = pa.ThisThread().AllocPages(Gfp.Kernel, 0);
        pa.ThisThread().FreePages(freed, 0);
        nint pAddress = (nint)p, freedAddress = (nint)freed;
        void Rejected(Action misuse, string mention)
        {
            var before = Snapshot(pa);
            var e = Assert.ThrowsAny<MemoryCorruptionException>(misuse);
            Assert.Contains(mention, e.Message);
            AssertSameState(before, Snapshot(pa));
        }
        Rejected(() => pa.ThisThread().FreePages((PageFrame*)freedAddress, 0), $"0x{freed->Pfn:x}");       // double free
        Rejected(() => pa.ThisThread().FreePages((PageFrame*)pAddress, 0), $"0x{p->Pfn:x}");              // wrong order
        Rejected(() => pa.ThisThread().FreePages((PageFrame*)pAddress + 1, 0), $"0x{p->Pfn + 1:x}");      // not the head
        var outside = stackalloc byte[128];
        nint fake = (nint)outside;
        Assert.ThrowsAny<Exception>(() => pa.ThisThread().FreePages((PageFrame*)fake, 0));
        pa.ThisThread().FreePages(p, 1);
    }

    [Fact]
    public void DrainsFromAnotherThreadWhileAHandleRunsLoseNothing()
    {
        using var sys = NewSystem(64);
        PageAllocator pa = sys.Pages;
        string boot = pa.BuddyInfo();
        using var stop = new CancellationTokenSource();
        long pairs = 0;
        var worker = new Thread(() =>
        {
            var t = pa.ThisThread();
            var held = new nint[48];
            var rnd = new Random(3);
            while (!stop.IsCancellationRequested)
            {
                int n = rnd.Next(1, held.Length);
                for (int i = 0; i < n; i++) held[i] = (nint)t.AllocPages(Gfp.Kernel, i % 4);
                for (int i = 0; i < n; i++) t.FreePages((PageFrame*)held[i], i % 4);
                pairs += n;
            }
        });
        worker.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int drains = 0;
        while (clock.ElapsedMilliseconds < 700 || drains < 50)
        {
            pa.DrainAllPages();
            drains++;
        }
        stop.Cancel();
        worker.Join();
        Assert.True(pairs > 0);
        Assert.Equal(pa.PagesAllocated, pa.PagesFreed);
        pa.DrainAllPages();
        Assert.Equal(boot, pa.BuddyInfo());
    }
}
