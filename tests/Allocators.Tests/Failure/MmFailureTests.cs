using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.Failure.FailNth;

namespace Allocators.Tests.Failure;

/// <summary>
/// Address-space calls that allocate several things in turn (mmap with MAP_POPULATE, mremap, fork, a new process)
/// fail as a whole: whichever allocation fails, nothing they made stays behind and what they were given still works.
/// </summary>
public sealed class MmFailureTests
{
    private const ulong Page = 4096;
    private const ulong Huge = VirtualAddress.PmdSize;
    private const MapFlags PrivateAnon = MapFlags.Private | MapFlags.Anonymous;
    private const MapFlags SharedAnon = MapFlags.Shared | MapFlags.Anonymous;
    private const MemoryProtection ReadWrite = MemoryProtection.ReadWrite;

    /// <summary>1 GiB: a range across it needs a PMD table and a PTE table of its own on either side.</summary>
    private const ulong GiB = 1UL << 30;

    /// <summary>Maps <paramref name="pages"/> pages at <paramref name="at"/> (MAP_FIXED_NOREPLACE) and stamps each with <paramref name="tag"/>.</summary>
    private static ulong MapStamped(AddressSpace mm, ulong at, int pages, long tag, MapFlags flags = PrivateAnon)
    {
        ulong a = mm.Mmap(at, (ulong)pages * Page, ReadWrite, flags | MapFlags.FixedNoReplace);
        for (int i = 0; i < pages; i++) mm.Write(a + (ulong)i * Page + 8, tag * 100_000 + i);
        return a;
    }

    private static void AssertStamped(AddressSpace mm, ulong at, int pages, long tag)
    {
        for (int i = 0; i < pages; i++) Assert.Equal(tag * 100_000 + i, mm.Read<long>(at + (ulong)i * Page + 8));
    }

    [Theory]
    [InlineData(PrivateAnon)]
    [InlineData(SharedAnon)]
    [InlineData(PrivateAnon | MapFlags.HugePage)]
    public unsafe void FailedPopulateOnA16MiBArenaLeavesNothingBehind(MapFlags flags)
    {
        using var sys = NewSystem(16);
        SystemState baseline = SystemState.Capture(sys);
        using (var mm = sys.CreateAddressSpace())
        {
            ulong kept = MapStamped(mm, 0x1000_0000, 8, tag: 1);
            SystemState before = SystemState.Capture(sys, mm);
            long free = sys.Pages.NrFreePages;
            int vmas = mm.VmaCount;
            long active = sys.Slab.Caches.Sum(c => c.ActiveObjects);
            AddressSpaceStatistics stats = mm.Statistics;

            Assert.Throws<OutOfMemoryException>(() => mm.Mmap(0, 32UL << 20, ReadWrite, flags | MapFlags.Populate));

            before.AssertSame(SystemState.Capture(sys, mm), "mmap(MAP_POPULATE) of 32 MiB on a 16 MiB arena");
            Assert.Equal(free, sys.Pages.NrFreePages);
            Assert.Equal(vmas, mm.VmaCount);
            Assert.Equal(active, sys.Slab.Caches.Sum(c => c.ActiveObjects));
            AddressSpaceStatistics now = mm.Statistics;
            Assert.Equal((stats.RssAnon, stats.RssShmem, stats.PageTablePages, stats.VmSizePages),
                (now.RssAnon, now.RssShmem, now.PageTablePages, now.VmSizePages));
            AssertStamped(mm, kept, 8, 1);
            void* p = sys.Slab.Kmalloc(64);
            Assert.True(p != null, "kmalloc after the failed mmap");
            sys.Slab.Kfree(p);
        }
        baseline.AssertSame(SystemState.Capture(sys), "after the process exited");
    }

    /// <summary>
    /// The new mapping starts right after a stamped one of 8 pages (the private writable one merges with it once
    /// populated) and crosses the 1 GiB line at 0x40000000, so it needs PUD-level, PMD and PTE tables on the way.
    /// </summary>
    [Theory]
    [InlineData(PrivateAnon, ReadWrite, 40)]
    [InlineData(PrivateAnon, MemoryProtection.Read, 40)]
    [InlineData(SharedAnon, ReadWrite, 16)]
    [InlineData(PrivateAnon | MapFlags.HugePage, ReadWrite, 1024)]
    public void PopulateFailsCleanlyAtEveryStep(MapFlags flags, MemoryProtection protection, int pages)
    {
        using var sys = NewSystem(16);
        SystemState baseline = SystemState.Capture(sys);
        using (var mm = sys.CreateAddressSpace())
        {
            ulong length = (ulong)pages * Page;
            ulong at = (flags & MapFlags.HugePage) != 0 ? 3 * GiB : GiB - length / 2;
            ulong kept = MapStamped(mm, at - 8 * Page, 8, tag: 2);
            ulong got = 0;
            var failed = Run(sys, $"mmap({flags | MapFlags.Populate}, {pages} pages)", () => SystemState.Capture(sys, mm),
                () => (got = mm.Mmap(at, length, protection, flags | MapFlags.Populate | MapFlags.FixedNoReplace)) == at,
                () => mm.Munmap(got, length),
                () => AssertStamped(mm, kept, 8, 2));
            Assert.True(failed.Pages >= 2, $"{failed.Pages} page allocations failed"); // at least the PMD and PTE tables past 1 GiB
        }
        baseline.AssertSame(SystemState.Capture(sys), "after the process exited");
    }

    public enum MremapCase
    {
        /// <summary>MREMAP_FIXED to an address in another PGD slot: every table of the new range is new.</summary>
        FixedFarAway,
        /// <summary>Growing with a mapping in the way: MREMAP_MAYMOVE picks a new range.</summary>
        GrowBlocked,
        /// <summary>A shared mapping moved: the new area holds a reference to the shared object.</summary>
        Shared,
        /// <summary>A huge page moved: it is split first, into the table deposited with it.</summary>
        HugePage,
        /// <summary>Growing in place: nothing to allocate.</summary>
        GrowInPlace,
    }

    [Theory]
    [InlineData(MremapCase.FixedFarAway)]
    [InlineData(MremapCase.GrowBlocked)]
    [InlineData(MremapCase.Shared)]
    [InlineData(MremapCase.HugePage)]
    [InlineData(MremapCase.GrowInPlace)]
    public void MremapFailsCleanlyAtEveryStepAndKeepsTheOldMapping(MremapCase which)
    {
        using var sys = NewSystem(16);
        SystemState baseline = SystemState.Capture(sys);
        using (var mm = sys.CreateAddressSpace())
        {
            const ulong far = 0x0000_1000_0000_0000;
            int pages = which == MremapCase.HugePage ? 512 : 24;
            ulong oldLen = (ulong)pages * Page, newLen = oldLen + 8 * Page;
            ulong old = which == MremapCase.HugePage ? 3 * GiB : GiB - oldLen / 2;
            MapFlags flags = which switch
            {
                MremapCase.Shared => SharedAnon,
                MremapCase.HugePage => PrivateAnon | MapFlags.HugePage,
                _ => PrivateAnon,
            };
            MapStamped(mm, old, pages, tag: 3, flags);
            if (which == MremapCase.HugePage) Assert.True(mm.GetPte(old).Huge);
            if (which == MremapCase.GrowBlocked) MapStamped(mm, old + oldLen, 1, tag: 4);
            MremapFlags how = which switch
            {
                MremapCase.GrowBlocked => MremapFlags.MayMove,
                MremapCase.GrowInPlace => 0,
                _ => MremapFlags.MayMove | MremapFlags.Fixed,
            };
            ulong got = 0;
            var failed = Run(sys, $"mremap ({which})", () => SystemState.Capture(sys, mm),
                () =>
                {
                    got = mm.Mremap(old, oldLen, newLen, how, far);
                    return true;
                },
                () =>
                {
                    AssertStamped(mm, got, pages, 3);
                    if (got == old) mm.Mremap(old, newLen, oldLen, 0);
                    else mm.Mremap(got, newLen, oldLen, MremapFlags.MayMove | MremapFlags.Fixed, old);
                },
                () => AssertStamped(mm, old, pages, 3));
            if (which == MremapCase.GrowInPlace) Assert.Equal(0, failed.Pages);
            else Assert.True(failed.Pages >= 1, $"{failed.Pages} page allocations failed");
            AssertStamped(mm, old, pages, 3);
        }
        baseline.AssertSame(SystemState.Capture(sys), "after the process exited");
    }

    /// <summary>A parent with private pages across a 1 GiB line, zero-page mappings, a shared mapping and a huge page.</summary>
    private static void MapForkParent(AddressSpace parent)
    {
        MapStamped(parent, GiB - 10 * Page, 20, tag: 5);
        parent.Mmap(GiB + 64 * Page, 4 * Page, MemoryProtection.Read, PrivateAnon | MapFlags.Populate | MapFlags.FixedNoReplace);
        MapStamped(parent, 2 * GiB, 6, tag: 6, SharedAnon);
        MapStamped(parent, 3 * GiB, 512, tag: 7, PrivateAnon | MapFlags.HugePage);
    }

    private static void AssertForkParentIntact(AddressSpace parent)
    {
        AssertStamped(parent, GiB - 10 * Page, 20, 5);
        AssertStamped(parent, 2 * GiB, 6, 6);
        AssertStamped(parent, 3 * GiB, 512, 7);
        // Writable again without a copy: the child gave back every reference it took.
        long rss = parent.Statistics.RssAnon;
        parent.Write(GiB - 10 * Page + 8, 5 * 100_000L);
        Assert.Equal(rss, parent.Statistics.RssAnon);
        Assert.Equal(0, parent.Statistics.CowFaults);
    }

    [Fact]
    public void ForkFailsCleanlyAtEveryStep()
    {
        using var sys = NewSystem(16);
        SystemState baseline = SystemState.Capture(sys);
        using (var parent = sys.CreateAddressSpace())
        {
            MapForkParent(parent);
            AddressSpace? child = null;
            var failed = Run(sys, "fork", () => SystemState.Capture(sys, parent),
                () =>
                {
                    child = parent.Fork();
                    return true;
                },
                () => child!.Dispose(),
                () => AssertForkParentIntact(parent));
            Assert.True(failed.Pages >= 6, $"{failed.Pages} page allocations failed");
            AssertForkParentIntact(parent);
        }
        baseline.AssertSame(SystemState.Capture(sys), "after the processes exited");
    }

    [Fact]
    public unsafe void ForkUnderRealExhaustionLeavesNothingBehind()
    {
        using var sys = NewSystem(16);
        SystemState baseline = SystemState.Capture(sys);
        using (var parent = sys.CreateAddressSpace())
        {
            parent.OomScoreAdj = -1000; // the OOM killer may not take it: the fork must fail, not the parent die
            MapForkParent(parent);
            var held = new List<nint>();
            for (PageFrame* p; (p = sys.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 0)) != null;) held.Add((nint)p);
            // Room for the child's PGD and a table or two, not for all the tables it needs.
            for (int i = 0; i < 3; i++)
            {
                sys.Pages.FreePages((PageFrame*)held[^1], 0);
                held.RemoveAt(held.Count - 1);
            }
            SystemState before = SystemState.Capture(sys, parent);
            Assert.Throws<OutOfMemoryException>(() => parent.Fork());
            before.AssertSame(SystemState.Capture(sys, parent), "fork with three free pages");
            foreach (nint p in held) sys.Pages.FreePages((PageFrame*)p, 0);
            AssertForkParentIntact(parent);
            using var child = parent.Fork();
            Assert.Equal(7 * 100_000L + 3, child.Read<long>(3 * GiB + 3 * Page + 8));
        }
        baseline.AssertSame(SystemState.Capture(sys), "after the processes exited");
    }

    [Fact]
    public void NewProcessFailsCleanlyAtEveryStep()
    {
        using var sys = NewSystem(16);
        AddressSpace? mm = null;
        var failed = Run(sys, "new address space", () => SystemState.Capture(sys),
            () =>
            {
                mm = sys.CreateAddressSpace();
                return true;
            },
            () => mm!.Dispose());
        Assert.Equal(1, failed.Pages); // the PGD
    }

    /// <summary>
    /// Splitting a huge page takes the table deposited when it was mapped, so munmap and mprotect of part of one work
    /// with no memory at all, and the page-table count does not move.
    /// </summary>
    [Fact]
    public void SplittingAHugePageNeedsNoMemory()
    {
        using var sys = NewSystem(16);
        SystemState baseline = SystemState.Capture(sys);
        using (var mm = sys.CreateAddressSpace())
        {
            ulong a = MapStamped(mm, 3 * GiB, 1024, tag: 8, PrivateAnon | MapFlags.HugePage);
            Assert.True(mm.GetPte(a).Huge && mm.GetPte(a + Huge).Huge);
            long tables = mm.PageTablePages;
            sys.Pages.FaultInjection.Probability = 100;
            try
            {
                mm.Munmap(a + Page, Page);
                mm.Mprotect(a + Huge + Page, Page, MemoryProtection.Read);
                Assert.Equal(0, sys.Pages.FaultInjection.Injected);
            }
            finally
            {
                sys.Pages.FaultInjection.Probability = 0;
            }
            Assert.False(mm.GetPte(a).Huge || mm.GetPte(a + Huge).Huge);
            Assert.Equal(tables, mm.PageTablePages);
            Assert.Equal(1023, mm.Statistics.RssAnon);
            Assert.Equal(8 * 100_000L, mm.Read<long>(a + 8));
            Assert.Equal(8 * 100_000L + 514, mm.Read<long>(a + 514 * Page + 8));
            Assert.Throws<SegmentationFaultException>(() => mm.Write(a + Huge + Page, 1L));
        }
        baseline.AssertSame(SystemState.Capture(sys), "after the process exited");
    }
}
