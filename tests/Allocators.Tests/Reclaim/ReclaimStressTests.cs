using Allocators.Mmu;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// Threads faulting, writing, forking and unmapping while kswapd and direct reclaim swap their pages out: every stamp
/// comes back, and when everything is gone no page, slot or swap-cache entry is left.
/// </summary>
public sealed class ReclaimStressTests
{
    private const int PageSize = 4096;

    [Fact]
    public void FaultsForksAndUnmapsRaceWithReclaim()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 128L << 20);
        const int Threads = 3;
        const int Pages = 2048; // 3 x 8 MiB of anonymous memory and their forks on a 16 MiB arena
        var deadline = DateTime.UtcNow.AddSeconds(4);
        var errors = new List<Exception>();
        var threads = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            int seed = t + 1;
            threads[t] = new Thread(() =>
            {
                try
                {
                    var random = new Random(seed);
                    int round = 0;
                    while (DateTime.UtcNow < deadline)
                    {
                        using var mm = f.NewProcess();
                        ulong a = mm.Mmap(0, Pages * PageSize, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
                        long[] expected = new long[Pages];
                        for (int i = 0; i < Pages; i++)
                        {
                            expected[i] = SwapFixture.Stamp(i, seed * 1000 + round);
                            mm.Write<long>(a + (ulong)i * PageSize, expected[i]);
                        }
                        AddressSpace? child = round % 2 == 0 ? mm.Fork() : null;
                        try
                        {
                            for (int k = 0; k < Pages; k++)
                            {
                                int i = random.Next(Pages);
                                ulong va = a + (ulong)i * PageSize;
                                Assert.Equal(expected[i], mm.Read<long>(va));
                                if (random.Next(4) == 0)
                                {
                                    expected[i] = ~expected[i];
                                    mm.Write<long>(va, expected[i]);
                                }
                                if (child != null && random.Next(8) == 0)
                                    Assert.Equal(SwapFixture.Stamp(i, seed * 1000 + round), child.Read<long>(va));
                            }
                            // Part of it goes while its pages may be on their way out.
                            mm.Munmap(a, Pages / 4 * PageSize);
                            for (int i = Pages / 4; i < Pages; i++)
                                Assert.Equal(expected[i], mm.Read<long>(a + (ulong)i * PageSize));
                        }
                        finally { child?.Dispose(); }
                        round++;
                    }
                }
                catch (Exception e)
                {
                    lock (errors) errors.Add(new InvalidOperationException(f.System.Meminfo() + string.Join("\n", f.System.VmStatItems().Where(i => i.Name.StartsWith("ps") || i.Name.StartsWith("pgsteal") || i.Name.StartsWith("oom") || i.Name.StartsWith("alloc"))), e));
                }
            });
            threads[t].Start();
        }
        foreach (var thread in threads) thread.Join();
        Assert.True(errors.Count == 0, string.Join("\n", errors.Select(e => (e as Allocators.Common.BadPageException)?.PageState + " " + e)));
        Assert.True(f.Counters.PagesSwappedOut > 0);
        Assert.True(f.Counters.StolenByKswapd + f.Counters.StolenDirect > 0);
        f.AssertAllBack();
    }
}
