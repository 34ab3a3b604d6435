using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// Shared anonymous memory (a shmem object) under memory pressure: its pages sit on the anonymous LRU, reclaim unmaps
/// them from every address space and writes them to a real swap file, and faults read them back — nothing lost, every
/// slot and page given back.
/// </summary>
public unsafe class ShmemSwapTests
{
    private const MapFlags SharedAnon = MapFlags.Shared | MapFlags.Anonymous;
    private const int PageSize = 4096;

    private static ulong MapSharedStamped(AddressSpace mm, int pages, int seed = 1) => SwapTests.MapStamped(mm, pages, seed, SharedAnon);

    private static long NrShmem(SwapFixture f) => f.Kernel.Statistics.ShmemPages;

    [Fact]
    public void ASharedMappingFourTimesTheArenaKeepsEveryStamp()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 96L << 20);
        using (var mm = f.NewProcess())
        {
            int pages = (int)(f.Pages.ManagedPages * 4);
            ulong a = MapSharedStamped(mm, pages);
            SwapTests.AssertStamps(mm, a, pages);
            SwapTests.AssertStamps(mm, a, pages, order: Enumerable.Range(0, pages).Reverse());
            Assert.True(f.Counters.PagesSwappedOut >= pages - f.Pages.ManagedPages, $"{f.Counters.PagesSwappedOut} pages out");
            Assert.True(mm.Statistics.MajorFaults > 0);
            Assert.True(NrShmem(f) < f.Pages.ManagedPages);
            Assert.Equal(0, mm.SwapEntries); // shared pages go to swap through the object, not the page tables
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        Assert.Equal(0, NrShmem(f));
        f.AssertAllBack();
    }

    [Fact]
    public void AForkSharesTheSwappedPagesBothWays()
    {
        using var f = new SwapFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = MapSharedStamped(parent, 256);
            using (var child = parent.Fork())
            {
                SwapTests.AssertStamps(child, a, 256); // the child maps the parent's pages
                long resident = NrShmem(f);
                Assert.Equal(256, resident);
                Assert.True(f.System.Reclaim(256) >= 128);
                Assert.True(NrShmem(f) < resident);
                Assert.Contains(Enumerable.Range(0, 256), i => parent.FollowPage(a + (ulong)i * PageSize) == null);

                // The child reads every page back from swap; the parent then finds them in the object, no second read.
                long read = f.Counters.PagesSwappedIn;
                SwapTests.AssertStamps(child, a, 256);
                Assert.True(f.Counters.PagesSwappedIn > read);
                long parentMajor = parent.Statistics.MajorFaults;
                SwapTests.AssertStamps(parent, a, 256);
                Assert.Equal(parentMajor, parent.Statistics.MajorFaults);
                Assert.True(parent.FollowPage(a + 7 * PageSize) == child.FollowPage(a + 7 * PageSize));

                // Writes after another trip through swap are seen by the other side.
                Assert.True(f.System.Reclaim(256) >= 128);
                for (int i = 0; i < 256; i += 2) child.Write<long>(a + (ulong)i * PageSize, -i);
                Assert.True(f.System.Reclaim(256) >= 128);
                for (int i = 0; i < 256; i++)
                    Assert.Equal(i % 2 == 0 ? -i : SwapFixture.Stamp(i), parent.Read<long>(a + (ulong)i * PageSize));
                f.AnonSwapChecks();
            }
            for (int i = 1; i < 256; i += 2) Assert.Equal(SwapFixture.Stamp(i), parent.Read<long>(a + (ulong)i * PageSize));
        }
        f.AssertAllBack();
    }

    [Fact]
    public void MunmapOfSwappedSharedMemoryFreesTheSlots()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = MapSharedStamped(mm, 128);
            Assert.True(f.System.Reclaim(128) > 0);
            Assert.True(f.Device!.UsedPages > 0);
            mm.Munmap(a, 128 * PageSize);
            Assert.Equal(0, f.Device.UsedPages);
            Assert.Equal(0, NrShmem(f));
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void SwapoffBringsSharedPagesBack()
    {
        using var f = new SwapFixture(arenaBytes: 32L << 20);
        using (var mm = f.NewProcess())
        {
            ulong a = MapSharedStamped(mm, 512);
            Assert.True(f.System.Reclaim(512) > 0);
            Assert.True(f.Device!.UsedPages > 0);
            f.System.Swapoff(f.SwapPath);
            Assert.DoesNotContain(f.SwapPath, f.System.ProcSwaps());
            Assert.Equal(512, NrShmem(f));
            long major = mm.Statistics.MajorFaults;
            SwapTests.AssertStamps(mm, a, 512);
            Assert.Equal(major, mm.Statistics.MajorFaults);
            f.AnonSwapChecks();
        }
        f.Pages.DrainAllPages();
        Assert.Equal(f.InitialBuddy, f.Pages.BuddyInfo());
    }

    [Fact]
    public void AFailingSwapWriteKeepsSharedPagesInMemory()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = MapSharedStamped(mm, 128);
            f.Device!.FailMakeRequest.Probability = 100;
            f.Device.FailMakeRequest.Times = -1;
            Assert.Equal(0, f.System.Reclaim(128));
            Assert.True(f.Counters.SwapWriteFailures > 0);
            Assert.Equal(0, f.Device.UsedPages);
            Assert.Equal(128, NrShmem(f));
            SwapTests.AssertStamps(mm, a, 128);
            f.Device.FailMakeRequest.Probability = 0;
            Assert.True(f.System.Reclaim(128) > 0);
            SwapTests.AssertStamps(mm, a, 128);
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void ThreadsSharingAMappingWithAForkUnderReclaimLoseNothing()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 64L << 20);
        using (var parent = f.NewProcess())
        {
            int pages = (int)(f.Pages.ManagedPages * 2);
            ulong a = parent.Mmap(0, (ulong)pages * PageSize, MemoryProtection.ReadWrite, SharedAnon);
            using var child = parent.Fork();
            // Each thread owns the pages i with i % 4 == its number and counts its own writes into them; the two
            // processes alternate per page, so every page is reached through both and through swap.
            const int Threads = 4, Rounds = 3;
            var workers = new Thread[Threads];
            Exception? failure = null;
            for (int t = 0; t < Threads; t++)
            {
                int me = t;
                workers[t] = new Thread(() =>
                {
                    try
                    {
                        for (int round = 1; round <= Rounds; round++)
                        {
                            for (int i = me; i < pages; i += Threads)
                            {
                                AddressSpace writer = (i + round) % 2 == 0 ? parent : child;
                                ulong va = a + (ulong)i * PageSize;
                                long seen = writer.Read<long>(va);
                                if (seen != (round - 1) * (long)pages + (round == 1 ? 0 : i))
                                    throw new InvalidOperationException($"page {i} round {round}: read {seen}");
                                writer.Write<long>(va, round * (long)pages + i);
                            }
                        }
                    }
                    catch (Exception e) { failure ??= e; }
                });
            }
            foreach (Thread w in workers) w.Start();
            foreach (Thread w in workers) w.Join();
            Assert.Null(failure);
            for (int i = 0; i < pages; i++) Assert.Equal(Rounds * (long)pages + i, parent.Read<long>(a + (ulong)i * PageSize));
            Assert.True(f.Counters.PagesSwappedOut > 0);
            f.WaitForReclaim();
            f.AnonSwapChecks();
            parent.CheckConsistency();
            child.CheckConsistency();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void SharedMappingsComingAndGoingUnderReclaimLeakNothing()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 64L << 20);
        using (var mm = f.NewProcess())
        {
            // Areas are mapped, written, forked, read back and unmapped while another thread reclaims without a
            // pause: objects go while reclaim holds their pages, and pages sit in the swap cache as their object goes.
            using var stop = new CancellationTokenSource();
            Exception? failure = null;
            var reclaimer = new Thread(() =>
            {
                try
                {
                    while (!stop.IsCancellationRequested) f.System.Reclaim(64);
                }
                catch (Exception e) { failure ??= e; }
            });
            reclaimer.Start();
            try
            {
                // 40 rounds, and more until the reclaimer has swapped something out (whether it meets a shared page
                // in 40 rounds depends on the two threads' timing).
                var deadline = DateTime.UtcNow.AddSeconds(20);
                for (int round = 0; round < 40 || (f.Counters.PagesSwappedOut == 0 && DateTime.UtcNow < deadline); round++)
                {
                    int pages = 32 + round % 5 * 16;
                    ulong a = MapSharedStamped(mm, pages, seed: round + 1);
                    using (AddressSpace child = mm.Fork())
                    {
                        SwapTests.AssertStamps(child, a, pages, seed: round + 1);
                        child.Munmap(a, (ulong)pages * PageSize);
                    }
                    SwapTests.AssertStamps(mm, a, pages, seed: round + 1);
                    mm.Munmap(a, (ulong)pages * PageSize);
                }
            }
            finally
            {
                stop.Cancel();
                reclaimer.Join();
            }
            Assert.Null(failure);
            Assert.True(f.Counters.PagesSwappedOut > 0);
            Assert.Equal(0, NrShmem(f));
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }
}
