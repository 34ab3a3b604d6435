using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Reclaim;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// sc->reclaim_idx: direct reclaim for an allocation takes only pages of the zones that allocation may use. On a
/// split arena a kernel (lowmem) allocation that freed the oldest pages — high user pages — would free nothing it
/// could use, and fail or call the OOM killer while low user pages sat on the lists.
/// </summary>
public unsafe class ReclaimZoneTests
{
    private const long MiB = 1L << 20;
    private const int PageSize = 4096;

    [Fact]
    public void ALowmemAllocationReclaimsLowPagesAndLeavesTheOlderHighOnes()
    {
        using var fx = new SwapFixture(arenaBytes: 16 * MiB, lowMemoryLimit: 8 * MiB);
        using (var mm = fx.NewProcess())
        {
            // User pages fill HighMem first (GFP_HIGHUSER), then spill into low memory: the high ones are the older.
            const int Pages = 3200;
            ulong a = SwapTests.MapStamped(mm, Pages);
            fx.WaitForReclaim();
            fx.Pages.DrainAllPages();
            var (lowFree, highFree) = FreeByZone(fx.Pages);
            long lowUser = CountResident(fx, mm, a, Pages, high: false);
            Assert.True(lowUser > 2 * Vmscan.SwapClusterMax, $"only {lowUser} user pages in low memory");

            var vmscan = (Vmscan)fx.Pages.Reclaimer!;
            long freed = vmscan.TryToFreePages(Gfp.Kernel, 0, 0);
            fx.WaitForReclaim();
            fx.Pages.DrainAllPages();
            var (lowAfter, highAfter) = FreeByZone(fx.Pages);

            Assert.True(freed >= Vmscan.SwapClusterMax, $"direct reclaim freed {freed} pages");
            Assert.True(lowAfter - lowFree >= Vmscan.SwapClusterMax, $"low memory free {lowFree} -> {lowAfter} pages");
            Assert.Equal(highFree, highAfter); // not one high page taken for a lowmem allocation
            SwapTests.AssertStamps(mm, a, Pages); // and every page, swapped or not, reads back
        }
        fx.AssertAllBack();
    }

    [Fact]
    public void ReclaimForAnyZoneStillTakesTheOldestPagesFirst()
    {
        using var fx = new SwapFixture(arenaBytes: 16 * MiB, lowMemoryLimit: 8 * MiB);
        using (var mm = fx.NewProcess())
        {
            const int Pages = 3200;
            ulong a = SwapTests.MapStamped(mm, Pages);
            fx.WaitForReclaim();
            fx.Pages.DrainAllPages();
            var (_, highFree) = FreeByZone(fx.Pages);
            var vmscan = (Vmscan)fx.Pages.Reclaimer!;
            Assert.True(vmscan.TryToFreePages(Gfp.HighUser, 0, 0) >= Vmscan.SwapClusterMax);
            fx.WaitForReclaim();
            fx.Pages.DrainAllPages();
            Assert.True(FreeByZone(fx.Pages).High > highFree, "a HighMem allocation's reclaim freed no high page");
            SwapTests.AssertStamps(mm, a, Pages);
        }
        fx.AssertAllBack();
    }

    private static (long Low, long High) FreeByZone(PageAllocator pages)
    {
        long low = 0, high = 0;
        foreach (Zone z in pages.Zones)
        {
            if (z.Type == ZoneType.HighMem) high += z.FreePages;
            else low += z.FreePages;
        }
        return (low, high);
    }

    private static long CountResident(SwapFixture fx, AddressSpace mm, ulong a, int pages, bool high)
    {
        long n = 0;
        for (int i = 0; i < pages; i++)
        {
            PageTableEntry pte = mm.GetPte(a + (ulong)i * PageSize);
            if (pte.Present && fx.Kernel.IsHighMem(fx.System.Memory.PfnToPage(pte.Pfn)) == high) n++;
        }
        return n;
    }
}
