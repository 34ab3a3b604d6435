using Allocators.Mmu;
using Allocators.PageAlloc;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// Transparent huge pages under reclaim: a huge page stays off the LRU while mapped whole; split (by a partial
/// change, or by the split shrinker under memory pressure) its base pages join the anonymous LRU and go to swap like
/// any others.
/// </summary>
public class HugePageReclaimTests
{
    private const MapFlags HugeAnon = MapFlags.Private | MapFlags.Anonymous | MapFlags.HugePage;
    private const ulong HugeSize = 2UL << 20;
    private const int PageSize = 4096;

    [Fact]
    public void ThePagesOfASplitHugePageAreReclaimed()
    {
        using var f = new SwapFixture(arenaBytes: 32L << 20);
        using (var mm = f.NewProcess())
        {
            const int Pages = 512;
            ulong a = SwapTests.MapStamped(mm, Pages, flags: HugeAnon | MapFlags.Fixed, at: 1UL << 30);
            Assert.True(f.Kernel.Statistics.ThpFaultAllocations >= 1);
            long splits = f.Kernel.Statistics.ThpSplits;
            mm.Mprotect(a, PageSize, MemoryProtection.Read); // a partial change splits the mapping
            Assert.Equal(splits + 1, f.Kernel.Statistics.ThpSplits);
            Assert.Equal(Pages, f.Pages.Lru.Total(LruList.InactiveAnon) + f.Pages.Lru.Total(LruList.ActiveAnon));

            long freed = f.System.Reclaim(Pages);
            Assert.True(freed >= Pages / 2, $"freed {freed}");
            Assert.True(mm.SwapEntries >= Pages / 2);
            SwapTests.AssertStamps(mm, a, Pages);
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void HugePagesTwiceTheArenaAreSplitUnderPressureAndKeepEveryStamp()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 64L << 20);
        using (var mm = f.NewProcess())
        {
            int pages = (int)(f.Pages.ManagedPages * 2) & ~511;
            ulong a = SwapTests.MapStamped(mm, pages, flags: HugeAnon | MapFlags.Fixed, at: 1UL << 30);
            SwapTests.AssertStamps(mm, a, pages);
            Assert.True(f.Kernel.Statistics.ThpFaultAllocations >= 1);
            Assert.True(f.Kernel.Statistics.ThpSplits >= 1);
            Assert.True(f.Counters.PagesSwappedOut > 0);
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        f.AssertAllBack();
    }
}
