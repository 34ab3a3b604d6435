using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.PageAlloc;

/// <summary>The buddy consistency check finds each kind of broken invariant it promises to find.</summary>
public sealed unsafe class ConsistencyCheckTests
{
    [Fact]
    public void AHealthySystemPasses()
    {
        using var sys = PageTestKit.NewSystem();
        var pages = new List<nint>();
        for (int order = 0; order <= 4; order++) pages.Add((nint)sys.Pages.AllocPages(Gfp.Kernel, order));
        sys.Pages.CheckConsistency();
        for (int order = 0; order <= 4; order++) sys.Pages.FreePages((PageFrame*)pages[order], order);
        sys.Pages.DrainAllPages();
        sys.Pages.CheckConsistency();
    }

    [Fact]
    public void AFrameMarkedFreeButNotListedIsFound()
    {
        using var sys = PageTestKit.NewSystem();
        PageFrame* page = sys.Pages.AllocPages(Gfp.Kernel, 0);
        page->FlagsAndZone |= (uint)PageFlags.Buddy;
        var ex = Assert.Throws<InvalidOperationException>(sys.Pages.CheckConsistency);
        Assert.Contains("marked free block heads", ex.Message);
        page->FlagsAndZone &= ~(ulong)(uint)PageFlags.Buddy;
        sys.Pages.FreePages(page, 0);
    }

    [Fact]
    public void AWrongOrderOnAListedBlockIsFound()
    {
        using var sys = PageTestKit.NewSystem();
        sys.Pages.DrainAllPages();
        Zone zone = sys.Pages.Zones.First(z => z.FreePages > 0);
        PageFrame* head = null;
        int order = PageAllocator.MaxOrder;
        for (; order >= 0 && head == null; order--) head = zone.FreeListHeadForTesting(order);
        Assert.True(head != null);
        int saved = head->Order;
        head->_order = saved == 0 ? 1 : saved - 1;
        try
        {
            var ex = Assert.Throws<InvalidOperationException>(sys.Pages.CheckConsistency);
            Assert.Contains("is listed but not a free block of this order", ex.Message);
        }
        finally { head->_order = saved; }
        sys.Pages.CheckConsistency();
    }
}
