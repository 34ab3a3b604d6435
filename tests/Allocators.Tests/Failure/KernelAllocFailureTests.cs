using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Allocators.Vmalloc;
using static Allocators.Tests.Failure.FailNth;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Failure;

/// <summary>
/// Kernel-side calls that allocate several things in turn (vmalloc and its relatives, krealloc, kcalloc, bulk slab
/// allocation) fail as a whole: whichever allocation fails, nothing they made stays behind and their inputs still work.
/// </summary>
public sealed unsafe class KernelAllocFailureTests
{
    private const ulong Page = PageFrame.PageSize;

    /// <summary>
    /// vmalloc of 24 pages: the area record, the page array, each page, and the page tables. Cold, the area is the
    /// first and needs every kernel table on the way; warm, it follows a 500-page area and crosses into a new PTE
    /// table. Kernel tables made before a failure stay for the next area (as vmalloc's do in the kernel).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void VmallocOfManyPagesFailsCleanlyAtEveryStep(bool warm)
    {
        using var sys = NewSystem(16);
        VmallocAllocator v = sys.Vmalloc;
        ulong first = warm ? v.Vmalloc(500 * Page) : 0;
        if (warm) sys.Kernel.Memset(first, 0x5a, (long)(500 * Page));
        ulong got = 0;
        var failed = Run(sys, "vmalloc of 24 pages", () => SystemState.Capture(sys),
            () => (got = v.Vmalloc(24 * Page)) != 0,
            () => v.Vfree(got),
            () => { if (warm) Assert.Equal(0x5a5a5a5a5a5a5a5aUL, sys.Kernel.Read<ulong>(first + 499 * Page)); },
            kernelTablesMayChange: true);
        Assert.True(failed.Pages >= 25, $"{failed.Pages} page allocations failed");
        Assert.True(failed.Slab >= 2, $"{failed.Slab} slab allocations failed");
        v.Vfree(first);
    }

    /// <summary>Building vmalloc takes a slab cache and the record of the free range; disposing gives both back.</summary>
    [Fact]
    public void VmallocItselfFailsCleanlyToBeBuiltAndLeavesNothingWhenDisposed()
    {
        using var sys = NewSystem(16);
        VmallocAllocator? built = null;
        var failed = Run(sys, "building vmalloc", () => SystemState.Capture(sys),
            () =>
            {
                built = new VmallocAllocator(sys.Kernel, sys.Slab);
                return true;
            },
            () => built!.Dispose());
        Assert.True(failed.Pages >= 1 && failed.Slab >= 1, $"{failed} allocations failed");
        SystemState before = SystemState.Capture(sys);
        using (var v = new VmallocAllocator(sys.Kernel, sys.Slab))
        {
            v.Vfree(v.Vmalloc(5 * Page, 64 * 1024, Gfp.Kernel)); // splits the free space: two more records
        }
        before.AssertSame(SystemState.Capture(sys), "vmalloc built, used and disposed", kernelTablesMayChange: true);
    }

    [Fact]
    public void VmallocHugeFailsCleanlyAtEveryStep()
    {
        using var sys = NewSystem(16);
        VmallocAllocator v = sys.Vmalloc;
        ulong got = 0;
        var failed = Run(sys, "vmalloc_huge of 4 MiB", () => SystemState.Capture(sys),
            () => (got = v.VmallocHuge(4UL << 20)) != 0,
            () => v.Vfree(got),
            kernelTablesMayChange: true);
        Assert.True(failed.Pages >= 2, $"{failed.Pages} page allocations failed");
    }

    /// <summary>
    /// An aligned area cut out of the middle of a free block needs a second record for what is left above it; that
    /// record is taken first, so failing it leaves the free space whole.
    /// </summary>
    [Fact]
    public void AlignedVmallocFailsCleanlyWhenItSplitsAFreeBlock()
    {
        using var sys = NewSystem(16);
        VmallocAllocator v = sys.Vmalloc;
        ulong first = v.Vmalloc(Page);
        ulong got = 0;
        var failed = Run(sys, "vmalloc of 4 pages at 64 KiB", () => SystemState.Capture(sys),
            () => (got = v.Vmalloc(4 * Page, 64 * 1024, Gfp.Kernel)) != 0,
            () => v.Vfree(got),
            kernelTablesMayChange: true);
        Assert.True(failed.Slab >= 3, $"{failed.Slab} slab allocations failed"); // the area, the rest of the free block, the page array
        Assert.Equal(0UL, got % (64 * 1024));
        v.Vfree(first);
    }

    [Fact]
    public void VmapAndRingBufferFailCleanlyAndLeaveTheCallersPages()
    {
        using var sys = NewSystem(16);
        VmallocAllocator v = sys.Vmalloc;
        var pages = new nint[8];
        Assert.Equal(8, sys.Pages.AllocPagesBulk(Gfp.Kernel, pages));
        for (int i = 0; i < pages.Length; i++) *(long*)sys.Pages.PageAddress((PageFrame*)pages[i]) = 1000 + i;
        void PagesIntact()
        {
            for (int i = 0; i < pages.Length; i++)
            {
                var page = (PageFrame*)pages[i];
                Assert.Equal(1, page->RefCount);
                Assert.Equal(1000 + i, *(long*)sys.Pages.PageAddress(page));
            }
        }
        ulong got = 0;
        var vmap = Run(sys, "vmap of 8 pages", () => SystemState.Capture(sys),
            () => (got = v.Vmap(pages)) != 0, () => v.Vunmap(got), PagesIntact, kernelTablesMayChange: true);
        Assert.True(vmap.Slab >= 2, $"{vmap.Slab} slab allocations failed");
        RingBuffer? ring = null;
        var rings = Run(sys, "ring buffer of 4 pages", () => SystemState.Capture(sys),
            () =>
            {
                ring = new RingBuffer(v, 4);
                return true;
            },
            () => ring!.Dispose(), PagesIntact, kernelTablesMayChange: true);
        Assert.True(rings.Pages >= 4, $"{rings.Pages} page allocations failed");
        sys.Pages.FreePagesBulk(pages);
    }

    [Fact]
    public void VreallocAndKvmallocFailCleanlyAtEveryStep()
    {
        using var sys = NewSystem(16);
        VmallocAllocator v = sys.Vmalloc;
        ulong old = 0;
        void MakeOld()
        {
            old = v.Vmalloc(8 * Page);
            sys.Kernel.Memset(old, 0x33, (long)(8 * Page));
        }
        MakeOld();
        ulong got = 0;
        Run(sys, "vrealloc from 8 to 20 pages", () => SystemState.Capture(sys),
            () => (got = v.Vrealloc(old, 20 * Page)) != 0,
            () =>
            {
                Assert.Equal(0x3333333333333333UL, sys.Kernel.Read<ulong>(got + 8 * Page - 8));
                v.Vfree(got);
                MakeOld();
            },
            () => Assert.Equal(0x3333333333333333UL, sys.Kernel.Read<ulong>(old + 8 * Page - 8)),
            kernelTablesMayChange: true);
        v.Vfree(old);
        foreach (ulong size in new ulong[] { 40 * 1024, 100 * 1024 })
        {
            var failed = Run(sys, $"kvmalloc of {size} bytes", () => SystemState.Capture(sys),
                () => (got = v.Kvmalloc(size)) != 0, () => v.Kvfree(got), kernelTablesMayChange: true);
            Assert.True(failed.Pages >= 1, $"{failed.Pages} page allocations failed");
        }
    }

    /// <summary>krealloc within the slab caches, from a cache to a large kmalloc, between large ones, and shrinking in place.</summary>
    [Theory]
    [InlineData(100, 3000)]
    [InlineData(100, 50_000)]
    [InlineData(50_000, 200_000)]
    [InlineData(3000, 100)]
    public void KreallocFailsCleanlyAndKeepsTheOldBlock(int oldSize, int newSize)
    {
        using var sys = NewSystem(16);
        const ulong stamp = 0x1122334455667788;
        void* old = null;
        void MakeOld()
        {
            old = sys.Slab.Kmalloc((nuint)oldSize);
            Stamp((byte*)old, oldSize, stamp);
        }
        MakeOld();
        nuint usable = sys.Slab.Ksize(old);
        void* got = null;
        var failed = Run(sys, $"krealloc from {oldSize} to {newSize} bytes", () => SystemState.Capture(sys),
            () => (got = sys.Slab.Krealloc(old, (nuint)newSize)) != null,
            () =>
            {
                AssertStamp((byte*)got, Math.Min(oldSize, newSize), stamp);
                sys.Slab.Kfree(got);
                MakeOld();
            },
            () =>
            {
                Assert.Equal(usable, sys.Slab.Ksize(old));
                AssertStamp((byte*)old, oldSize, stamp);
            });
        if (newSize <= oldSize) Assert.Equal((0, 0), failed); // in place: nothing to allocate
        else Assert.True(failed.Pages + failed.Slab >= 1, $"{failed} allocations failed");
        sys.Slab.Kfree(old);
    }

    [Fact]
    public void KcallocAndBulkAllocationFailCleanlyAtEveryStep()
    {
        using var sys = NewSystem(16);
        void* got = null;
        foreach ((nuint count, nuint size) in new (nuint, nuint)[] { (100, 48), (3, 40_000) })
        {
            Run(sys, $"kcalloc({count}, {size})", () => SystemState.Capture(sys),
                () => (got = sys.Slab.Kcalloc(count, size)) != null, () => sys.Slab.Kfree(got));
        }
        KmemCache cache = sys.Slab.CreateCache("failure-bulk", 200);
        var objects = new nint[40];
        var failed = Run(sys, "kmem_cache_alloc_bulk of 40", () => SystemState.Capture(sys),
            () => cache.AllocBulk(Gfp.Kernel, objects) == objects.Length,
            () => cache.FreeBulk(objects));
        Assert.Equal(40, failed.Slab);
        cache.Destroy();
    }
}
