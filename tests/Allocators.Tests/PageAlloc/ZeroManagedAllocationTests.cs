using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>DESIGN §9: the hot paths allocate no managed memory.</summary>
public sealed unsafe class ZeroManagedAllocationTests
{
    private const int Pairs = 10_000;

    private static long MeasureBytes(Action body)
    {
        body();   // warm up: per-thread lists exist, code is jitted
        body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        body();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    [Fact]
    public void AllocFreePairsOfOrder0AllocateNothing()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        long bytes = MeasureBytes(() =>
        {
            for (int i = 0; i < Pairs; i++)
            {
                PageFrame* p = pa.AllocPages(Gfp.Kernel, 0);
                pa.FreePages(p, 0);
            }
        });
        Assert.Equal(0, bytes);
    }

    [Fact]
    public void AddressApiZeroedAndSmallOrdersAllocateNothing()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        long bytes = MeasureBytes(() =>
        {
            for (int i = 0; i < Pairs; i++)
            {
                int order = i & 3;
                byte* a = pa.GetFreePages(Gfp.Kernel | Gfp.Zero | Gfp.Comp, order);
                pa.FreePages(a, order);
                byte* z = pa.GetZeroedPage(Gfp.Atomic);
                pa.FreePage(z);
            }
        });
        Assert.Equal(0, bytes);
    }

    [Fact]
    public void BatchRefillsFlushesAndZoneFreesAllocateNothing()
    {
        // 200 live pages overflow the per-thread list (high 64) so refills and batch flushes to the zone run too;
        // order 5 never touches the per-thread lists.
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        var held = new nint[200];
        long bytes = MeasureBytes(() =>
        {
            for (int round = 0; round < Pairs / 200; round++)
            {
                for (int i = 0; i < held.Length; i++) held[i] = (nint)pa.AllocPages(Gfp.Kernel, 0);
                for (int i = 0; i < held.Length; i++) pa.FreePages((PageFrame*)held[i], 0);
                PageFrame* big = pa.AllocPages(Gfp.Kernel, 5);
                pa.FreePages(big, 5);
            }
        });
        Assert.Equal(0, bytes);
    }
}
