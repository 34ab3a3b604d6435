using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Reclaim;

/// <summary>Swap-out and swap-in through real reclaim and a real swap file.</summary>
public unsafe class SwapTests
{
    private const MapFlags PrivateAnon = MapFlags.Private | MapFlags.Anonymous;
    private const int PageSize = 4096;

    internal static ulong MapStamped(AddressSpace mm, int pages, int seed = 1, MapFlags flags = PrivateAnon, ulong at = 0)
    {
        ulong a = mm.Mmap(at, (ulong)pages * PageSize, MemoryProtection.ReadWrite, flags);
        for (int i = 0; i < pages; i++)
        {
            mm.Write<long>(a + (ulong)i * PageSize, SwapFixture.Stamp(i, seed));
            mm.Write<long>(a + (ulong)i * PageSize + PageSize - 8, ~SwapFixture.Stamp(i, seed));
        }
        return a;
    }

    internal static void AssertStamps(AddressSpace mm, ulong a, int pages, int seed = 1, IEnumerable<int>? order = null)
    {
        foreach (int i in order ?? Enumerable.Range(0, pages))
        {
            Assert.Equal(SwapFixture.Stamp(i, seed), mm.Read<long>(a + (ulong)i * PageSize));
            Assert.Equal(~SwapFixture.Stamp(i, seed), mm.Read<long>(a + (ulong)i * PageSize + PageSize - 8));
        }
    }

    [Fact]
    public void AnAddressSpaceFourTimesTheArenaKeepsEveryStamp()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 96L << 20);
        int pages = (int)(4 * (16L << 20) / PageSize);
        using (var mm = f.NewProcess())
        {
            ulong a = MapStamped(mm, pages);
            var random = new Random(7);
            AssertStamps(mm, a, pages, order: Enumerable.Range(0, pages).OrderBy(_ => random.Next()));
            AssertStamps(mm, a, pages);
            Assert.True(f.Counters.PagesSwappedOut > 0);
            Assert.True(f.Counters.PagesSwappedIn > 0);
            Assert.True(mm.Statistics.MajorFaults > 0);
            Assert.True(mm.SwapEntries > 0);
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void ProactiveReclaimSwapsOutAndFaultsBackIn()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = MapStamped(mm, 256);
            long writes = AnonSwap.t_swapWrites;
            long freed = f.System.Reclaim(256);
            Assert.Equal(writes + freed, AnonSwap.t_swapWrites); // counted per thread: NoIoReclaimStartsNoSwapWrite relies on it
            Assert.True(freed >= 200, $"freed {freed}");
            Assert.Equal(freed, mm.SwapEntries);
            Assert.Equal(256 - freed, mm.Statistics.RssAnon);
            Assert.Contains("SwapFree", f.System.Meminfo());
            long major = mm.Statistics.MajorFaults;
            long swappedIn = f.Counters.PagesSwappedIn;
            AssertStamps(mm, a, 256);
            // Every page came back; the ones readahead brought in ahead of their fault were minor faults.
            Assert.Equal(swappedIn + freed, f.Counters.PagesSwappedIn);
            long readahead = f.System.VmStatItems().Single(i => i.Name == "swap_ra_hit").Value;
            Assert.True(readahead > 0);
            Assert.Equal(major + freed - readahead, mm.Statistics.MajorFaults);
            Assert.Equal(0, mm.SwapEntries);
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void APageOnlyReadAfterSwapInIsDroppedAgainWithoutAWrite()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = MapStamped(mm, 256);
            long firstOut = f.System.Reclaim(256);
            Assert.True(firstOut >= 200, $"freed {firstOut}");
            long written = f.Counters.PagesSwappedOut;
            long used = f.Device!.UsedPages;
            AssertStamps(mm, a, 256);
            // Read back, the pages keep their slots and stay clean in the swap cache (should_try_to_free_swap).
            Assert.Equal(used, f.Device.UsedPages);
            Assert.True(Meminfo(f, "SwapCached") >= firstOut * 4, f.System.Meminfo());

            long again = f.System.Reclaim(256);
            Assert.True(again >= firstOut / 2, $"freed {again}");
            Assert.Equal(written, f.Counters.PagesSwappedOut); // nothing was written twice
            AssertStamps(mm, a, 256);

            // A write after a read needs no fault (the page is mapped writable, clean) and leaves the entry dirty:
            // the next reclaim writes that page, and only that one, to its slot again.
            AssertStamps(mm, a, 256);
            long faults = mm.Statistics.MinorFaults + mm.Statistics.MajorFaults;
            mm.Write<long>(a + 5 * PageSize, 42);
            Assert.Equal(faults, mm.Statistics.MinorFaults + mm.Statistics.MajorFaults);
            Assert.Equal(used, f.Device.UsedPages);
            Assert.True(f.System.Reclaim(256) >= again / 2);
            Assert.Equal(written + 1, f.Counters.PagesSwappedOut);
            Assert.Equal(42, mm.Read<long>(a + 5 * PageSize));
            Assert.Equal(~SwapFixture.Stamp(5, 1), mm.Read<long>(a + 5 * PageSize + PageSize - 8));
            f.AnonSwapChecks();
            mm.CheckConsistency();
        }
        f.AssertAllBack();
    }

    private static long Meminfo(SwapFixture f, string key)
    {
        string line = f.System.Meminfo().Split('\n').Single(l => l.StartsWith(key + ":", StringComparison.Ordinal));
        return long.Parse(line[(key.Length + 1)..].Replace("kB", "").Trim());
    }

    [Fact]
    public void ASwappedPageStaysSharedAfterForkUntilOneSideWrites()
    {
        using var f = new SwapFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = MapStamped(parent, 64);
            using (var child = parent.Fork())
            {
                Assert.True(f.System.Reclaim(64) >= 32);
                Assert.True(child.SwapEntries > 0);
                Assert.Equal(parent.SwapEntries, child.SwapEntries);
                int swapped = Enumerable.Range(0, 64).First(i => parent.FollowPage(a + (ulong)i * PageSize) == null);
                ulong va = a + (ulong)swapped * PageSize;

                long parentMajor = parent.Statistics.MajorFaults;
                Assert.Equal(SwapFixture.Stamp(swapped), parent.Read<long>(va));
                Assert.Equal(parentMajor + 1, parent.Statistics.MajorFaults);
                long childMajor = child.Statistics.MajorFaults;
                Assert.Equal(SwapFixture.Stamp(swapped), child.Read<long>(va));
                Assert.Equal(childMajor, child.Statistics.MajorFaults); // found in the swap cache
                PageFrame* shared = parent.FollowPage(va);
                Assert.True(shared == child.FollowPage(va));

                child.Write<long>(va, -5);
                Assert.Equal(-5, child.Read<long>(va));
                Assert.Equal(SwapFixture.Stamp(swapped), parent.Read<long>(va));
                Assert.True(parent.FollowPage(va) != child.FollowPage(va));
                AssertStamps(parent, a, 64);
                f.AnonSwapChecks();
            }
            AssertStamps(parent, a, 64);
        }
        f.AssertAllBack();
    }

    [Fact]
    public void AForkOfSwappedMemoryCopiesTheEntries()
    {
        using var f = new SwapFixture();
        using (var parent = f.NewProcess())
        {
            ulong a = MapStamped(parent, 64);
            Assert.True(f.System.Reclaim(64) >= 32);
            long entries = parent.SwapEntries;
            using (var child = parent.Fork())
            {
                Assert.Equal(entries, child.SwapEntries);
                AssertStamps(child, a, 64);
                parent.Munmap(a, 64 * PageSize);
                AssertStamps(child, a, 64);
            }
        }
        f.AssertAllBack();
    }

    [Fact]
    public void MunmapOfSwappedMemoryFreesTheSlots()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = MapStamped(mm, 128);
            Assert.True(f.System.Reclaim(128) > 0);
            Assert.True(f.Device!.UsedPages > 0);
            mm.Munmap(a, 128 * PageSize);
            Assert.Equal(0, mm.SwapEntries);
            Assert.Equal(0, f.Device.UsedPages);
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void SwapoffBringsEverythingBack()
    {
        using var f = new SwapFixture(arenaBytes: 32L << 20);
        using (var mm = f.NewProcess())
        {
            ulong a = MapStamped(mm, 512);
            Assert.True(f.System.Reclaim(512) > 0);
            Assert.Contains(f.SwapPath, f.System.ProcSwaps());
            f.System.Swapoff(f.SwapPath);
            Assert.Equal(0, mm.SwapEntries);
            Assert.DoesNotContain(f.SwapPath, f.System.ProcSwaps());
            long major = mm.Statistics.MajorFaults;
            AssertStamps(mm, a, 512);
            Assert.Equal(major, mm.Statistics.MajorFaults);
            f.AnonSwapChecks();
        }
        f.Pages.DrainAllPages();
        Assert.Equal(f.InitialBuddy, f.Pages.BuddyInfo());
    }

    [Fact]
    public void AFailingSwapWriteKeepsThePageDirtyAndInMemory()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = MapStamped(mm, 128);
            f.Device!.FailMakeRequest.Probability = 100;
            f.Device.FailMakeRequest.Times = -1;
            long freed = f.System.Reclaim(128);
            Assert.Equal(0, freed);
            Assert.True(f.Counters.SwapWriteFailures > 0);
            Assert.Equal(0, f.Counters.PagesSwappedOut);
            AssertStamps(mm, a, 128);
            f.Device.FailMakeRequest.Probability = 0;
            Assert.True(f.System.Reclaim(128) > 0);
            AssertStamps(mm, a, 128);
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }

    [Fact]
    public void NoIoReclaimStartsNoSwapWrite()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20);
        using (var mm = f.NewProcess())
        {
            // Fill memory with dirty anonymous pages nothing has written to swap yet.
            int pages = (int)(f.Pages.NrFreePages * 9 / 10);
            MapStamped(mm, pages);
            var taken = new List<nint>();
            long writesBefore = AnonSwap.t_swapWrites;
            long skippedBefore = f.Counters.SkippedForGfp.NoIo;
            for (int i = 0; i < 4096; i++)
            {
                PageFrame* p = f.Pages.AllocPages(Gfp.NoIo | Gfp.NoWarn, 0);
                if (p == null) break;
                taken.Add((nint)p);
            }
            Assert.True(f.Pages.DirectReclaimStalls > 0);
            Assert.Equal(writesBefore, AnonSwap.t_swapWrites);
            Assert.True(f.Counters.SkippedForGfp.NoIo > skippedBefore);
            foreach (nint p in taken) f.Pages.FreePages((PageFrame*)p, 0);
        }
        f.AssertAllBack();
    }

    [Fact]
    public void AtomicAllocationsNeverEnterReclaim()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20);
        using (var mm = f.NewProcess())
        {
            MapStamped(mm, (int)(f.Pages.NrFreePages * 9 / 10));
            long stalls = f.Pages.DirectReclaimStalls;
            var taken = new List<nint>();
            while (true)
            {
                PageFrame* p = f.Pages.AllocPages(Gfp.Atomic | Gfp.NoWarn, 0);
                if (p == null) break;
                taken.Add((nint)p);
            }
            Assert.Equal(stalls, f.Pages.DirectReclaimStalls);
            foreach (nint p in taken) f.Pages.FreePages((PageFrame*)p, 0);
        }
        f.AssertAllBack();
    }

    [Fact]
    public void ViewsShowSwapAndTheLruLists()
    {
        using var f = new SwapFixture();
        using (var mm = f.NewProcess())
        {
            MapStamped(mm, 256);
            var meminfo = f.System.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);
            Assert.Equal(96L << 10, meminfo["SwapTotal"] + 4); // last_page slots, less the header page
            Assert.True(meminfo["Active(anon)"] + meminfo["Inactive(anon)"] >= 256 * 4);
            f.System.Reclaim(128);
            meminfo = f.System.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);
            Assert.True(meminfo["SwapFree"] < meminfo["SwapTotal"]);
            long swapped = mm.SwapEntries;
            Assert.True(swapped > 0);
            Assert.Contains($"VmSwap:   {swapped * 4,8} kB\n", mm.Status());
            Assert.Contains($"Swap:           {swapped * 4,8} kB\n", mm.Smaps());
            var vmstat = f.System.VmStatItems().ToDictionary(i => i.Name, i => i.Value);
            Assert.True(vmstat["pswpout"] > 0);
            Assert.True(vmstat["pgscan_direct"] >= vmstat["pgsteal_direct"]);
            Assert.True(vmstat["pgsteal_direct"] > 0);
            string swaps = f.System.ProcSwaps();
            Assert.StartsWith("Filename", swaps);
            Assert.Contains(f.SwapPath, swaps);
        }
        f.AssertAllBack();
    }

    [Fact]
    public void ALoopSlightlyLargerThanMemoryRefaultsIntoTheActiveList()
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20);
        using (var mm = f.NewProcess())
        {
            int pages = (int)(f.Pages.ManagedPages * 12 / 10);
            ulong a = MapStamped(mm, pages);
            long major = mm.Statistics.MajorFaults;
            for (int round = 0; round < 3; round++) AssertStamps(mm, a, pages);
            long faults = mm.Statistics.MajorFaults - major;
            // Plain LRU faults on every access of a loop larger than memory; shadows and refault distances activate
            // the returning pages, and the active list keeps part of the loop resident.
            Assert.True(f.Counters.RefaultsAnon > 0);
            Assert.True(f.System.VmStatItems().Single(i => i.Name == "workingset_activate_anon").Value > 0);
            Assert.True(faults < 3L * pages * 9 / 10, $"{faults} faults for {3 * pages} accesses");
            f.AnonSwapChecks();
        }
        f.AssertAllBack();
    }
}
