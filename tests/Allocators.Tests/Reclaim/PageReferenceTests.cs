using Allocators.PageAlloc;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// How reclaim reads a page's use (folio_check_references and may_deactivate, Linux 5.9 and later), through real faults,
/// reclaim and swap: the reference a fault leaves is not use, a second one is; refaults that activate pages make
/// reclaim deactivate the active list before the inactive one runs low.
/// </summary>
public class PageReferenceTests
{
    private const int PageSize = 4096;

    private static long Activated(SwapFixture f) => Volatile.Read(ref f.Counters.PgActivate);

    private static long Deactivated(SwapFixture f) => Volatile.Read(ref f.Counters.PgDeactivate);

    [Fact]
    public void AnAnonymousPageTouchedOnlyByItsFaultIsReclaimedWithoutActivation()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = SwapTests.MapStamped(mm, 64);
            long activated = Activated(f);
            long freed = f.System.Reclaim(64);
            Assert.True(freed >= 32, $"freed {freed}");
            // The first scan finds each page's fault reference and only marks it (PG_referenced); the second finds
            // no new use and takes it.
            Assert.Equal(activated, Activated(f));
            Assert.Equal(0, f.Pages.Lru.Total(LruList.ActiveAnon));
            SwapTests.AssertStamps(mm, a, 64);
        }
        f.AssertAllBack();
    }

    [Fact]
    public void AUseAfterReclaimMarkedThePageActivatesIt()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = SwapTests.MapStamped(mm, 64);
            long freed = f.System.Reclaim(1);
            long survivors = 64 - freed;
            Assert.True(freed >= 1 && survivors >= 16, $"freed {freed}");
            Assert.Equal(0, f.Pages.Lru.Total(LruList.ActiveAnon));

            // Every survivor carries PG_referenced from the scans; reading it now is its second use.
            long activated = Activated(f);
            SwapTests.AssertStamps(mm, a, 64);
            f.System.Reclaim(1);
            Assert.True(Activated(f) - activated >= survivors, $"{Activated(f) - activated} activated, {survivors} survivors");
            Assert.True(f.Pages.Lru.Total(LruList.ActiveAnon) >= survivors);
            SwapTests.AssertStamps(mm, a, 64);
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void RefaultActivationsDeactivateBeforeTheInactiveListRunsLow()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            // An active list: pages used twice across reclaim scans.
            ulong hot = SwapTests.MapStamped(mm, 64);
            f.System.Reclaim(1);
            SwapTests.AssertStamps(mm, hot, 64);
            f.System.Reclaim(1);
            long active = f.Pages.Lru.Total(LruList.ActiveAnon);
            Assert.True(active >= 16, $"{active} active");

            // The pages that reclaim just evicted come straight back: their refault distance fits in the active
            // list, so they return active — a new workingset being established.
            long refaultActivations = f.System.VmStatItems().Single(i => i.Name == "workingset_activate_anon").Value;
            SwapTests.AssertStamps(mm, hot, 64);
            Assert.True(f.System.VmStatItems().Single(i => i.Name == "workingset_activate_anon").Value > refaultActivations);

            // Plenty of inactive pages, yet reclaim deactivates: the refaults said the active list is stale.
            ulong cold = SwapTests.MapStamped(mm, 4 * 64, seed: 2);
            Assert.True(f.Pages.Lru.Total(LruList.InactiveAnon) > f.Pages.Lru.Total(LruList.ActiveAnon));
            long deactivated = Deactivated(f);
            f.System.Reclaim(1);
            Assert.True(Deactivated(f) > deactivated);

            // With no refault since that reclaim finished, the next one leaves the active list alone.
            Assert.True(f.Pages.Lru.Total(LruList.InactiveAnon) > f.Pages.Lru.Total(LruList.ActiveAnon));
            deactivated = Deactivated(f);
            f.System.Reclaim(1);
            Assert.Equal(deactivated, Deactivated(f));

            SwapTests.AssertStamps(mm, hot, 64);
            SwapTests.AssertStamps(mm, cold, 4 * 64, seed: 2);
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }
}
