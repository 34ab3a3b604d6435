using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
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

    private const int Pages = 3200;

    [Fact]
    public void ALowmemAllocationReclaimsLowPagesAndLeavesTheOlderHighOnes()
        => WithOldHighAndNewerLowUserPages((fx, vmscan, mm, a) =>
        {
            var (lowFree, highFree) = FreeByZone(fx.Pages);
            long lowUser = CountResident(fx, mm, a, high: false);
            Assert.True(lowUser > 2 * Vmscan.SwapClusterMax, $"only {lowUser} user pages in low memory");
            long freed = vmscan.TryToFreePages(Gfp.Kernel, 0, 0);
            var (lowAfter, highAfter) = Settled(fx);
            Assert.True(freed >= Vmscan.SwapClusterMax, $"direct reclaim freed {freed} pages");
            Assert.True(lowAfter - lowFree >= Vmscan.SwapClusterMax, $"low memory free {lowFree} -> {lowAfter} pages");
            Assert.Equal(highFree, highAfter); // not one high page taken for a lowmem allocation
        });

    [Fact]
    public void ReclaimForAnyZoneStillTakesTheOldestPagesFirst()
        => WithOldHighAndNewerLowUserPages((fx, vmscan, _, _) =>
        {
            var (_, highFree) = FreeByZone(fx.Pages);
            Assert.True(vmscan.TryToFreePages(Gfp.HighUser, 0, 0) >= Vmscan.SwapClusterMax);
            Assert.True(Settled(fx).High > highFree, "a HighMem allocation's reclaim freed no high page");
        });

    [Fact]
    public void LowMemoryBelowItsWatermarkWakesKswapdForLowPagesEvenWhenHighMemoryIsFine()
        => WithOldHighAndNewerLowUserPages((fx, _, _, _) =>
        {
            Zone normal = fx.Pages.GetZone(0, ZoneType.Normal);
            var (_, highFree) = FreeByZone(fx.Pages);
            // GFP_NOWAIT: no direct reclaim, only kswapd's wake-up, for a lowmem allocation.
            long wakeups = fx.Counters.KswapdWakeups, scanned = fx.Counters.ScannedByKswapd, stolen = fx.Counters.StolenByKswapd;
            var taken = new List<nint>();
            // Past the low watermark by a per-CPU batch, so that an allocation takes the slow path that wakes kswapd.
            for (int i = 0; i < 4096 && normal.FreePages > normal.WatermarkLow - 8; i++)
            {
                PageFrame* p = fx.Pages.AllocPages(Gfp.NoWait | Gfp.NoWarn, 0);
                if (p == null) break;
                taken.Add((nint)p);
            }
            var (lowAfter, highAfter) = Settled(fx);
            foreach (nint p in taken) fx.Pages.FreePages((PageFrame*)p, 0);
            Assert.True(lowAfter > normal.WatermarkHigh, $"low memory left at {lowAfter} free pages (high watermark {normal.WatermarkHigh}): kswapd did not balance it; {taken.Count} taken, kswapd woken {fx.Counters.KswapdWakeups - wakeups} times, scanned {fx.Counters.ScannedByKswapd - scanned}, stole {fx.Counters.StolenByKswapd - stolen}");
            Assert.Equal(highFree, highAfter);
        });

    /// <summary>
    /// A 16 MiB arena split at 8 MiB with swap, and a process whose stamped user pages fill HighMem first
    /// (GFP_HIGHUSER) and then spill into low memory, so the high ones are the older; after the check every page,
    /// swapped or not, reads back its stamp and everything comes back.
    /// </summary>
    private static void WithOldHighAndNewerLowUserPages(Action<SwapFixture, Vmscan, AddressSpace, ulong> check)
    {
        using var fx = new SwapFixture(arenaBytes: 16 * MiB, lowMemoryLimit: 8 * MiB);
        using (var mm = fx.NewProcess())
        {
            ulong a = SwapTests.MapStamped(mm, Pages);
            Settled(fx);
            check(fx, (Vmscan)fx.Pages.Reclaimer!, mm, a);
            SwapTests.AssertStamps(mm, a, Pages);
        }
        fx.AssertAllBack();
    }

    /// <summary>Free pages by zone once kswapd is idle and the per-thread lists are drained.</summary>
    private static (long Low, long High) Settled(SwapFixture fx)
    {
        fx.WaitForReclaim();
        fx.Pages.DrainAllPages();
        return FreeByZone(fx.Pages);
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

    private static long CountResident(SwapFixture fx, AddressSpace mm, ulong a, bool high)
    {
        long n = 0;
        for (int i = 0; i < Pages; i++)
        {
            PageTableEntry pte = mm.GetPte(a + (ulong)i * PageSize);
            if (pte.Present && fx.Kernel.IsHighMem(fx.System.Memory.PfnToPage(pte.Pfn)) == high) n++;
        }
        return n;
    }
}
