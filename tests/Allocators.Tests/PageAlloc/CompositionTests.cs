using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>The layers on their own (arena + page allocator) and composed by <see cref="MemorySystem"/>.</summary>
public sealed unsafe class CompositionTests
{
    /// <summary>No checked mode: these tests look at freed pages on the per-thread lists, where KASAN's quarantine would hold them instead.</summary>
    private static CheckedModeOptions PerThreadListsVisible => CheckedModeOptions.Parse("");

    [Fact]
    public void ArenaAndPageAllocatorWorkWithoutMemorySystem()
    {
        using var memory = new PhysicalMemory(new PhysicalMemoryOptions { Size = 8 * MiB, Checks = PerThreadListsVisible });
        Assert.Equal(2048, memory.PresentPages);
        var pa = new PageAllocator(memory, new PageAllocatorOptions { PcpBatch = 4, PcpHigh = 8 });
        try
        {
            Assert.Same(memory, pa.Memory);
            Assert.Equal(2048, pa.ManagedPages);
            // Before the allocator takes them, frames are offline; afterwards they are free buddy pages.
            Assert.True(memory.PfnToPage(0)->Has(PageFlags.Buddy));
            Assert.Equal(10, memory.PfnToPage(0)->Order);

            var pages = new List<nint>();
            for (int i = 0; i < 40; i++) pages.Add((nint)pa.AllocPages(Gfp.Kernel, 0));
            foreach (nint p in pages) pa.FreePages((PageFrame*)p, 0);
            Assert.InRange(pa.PcpPages, 1, 8);          // the small PcpHigh bounds what a thread keeps
            pa.DrainAllPages();
            Assert.Equal(0, pa.PcpPages);
            Assert.Equal(2048, pa.NrFreePages);
        }
        finally
        {
            pa.Dispose();
        }
        Assert.Throws<ObjectDisposedException>(() => pa.AllocPages(Gfp.Kernel, 0));
        Assert.Throws<ObjectDisposedException>(() => pa.AllocPages(Gfp.Kernel, 5));
        pa.Dispose();   // idempotent
    }

    [Fact]
    public void DisposingTheAllocatorReturnsPerThreadPagesFirst()
    {
        using var memory = new PhysicalMemory(new PhysicalMemoryOptions { Size = 8 * MiB, Checks = PerThreadListsVisible });
        using (var pa = new PageAllocator(memory))
        {
            PageFrame* p = pa.AllocPages(Gfp.Kernel, 0);
            pa.FreePages(p, 0);
            Assert.True(p->Has(PageFlags.Pcp));
        }
        // After Dispose every page the lists held is back in the buddy lists: a new allocator could not tell.
        Assert.All(Enumerable.Range(0, 2048), pfn => Assert.False(memory.PfnToPage((ulong)pfn)->Has(PageFlags.Pcp)));
        Assert.True(memory.PfnToPage(0)->Has(PageFlags.Buddy));
        Assert.Equal(10, memory.PfnToPage(0)->Order);
    }

    [Fact]
    public void PcpOptionsAreValidated()
    {
        using var memory = new PhysicalMemory(new PhysicalMemoryOptions { Size = 4 * MiB, Checks = PerThreadListsVisible });
        Assert.Throws<ArgumentException>(() => new PageAllocator(memory, new PageAllocatorOptions { PcpBatch = 0 }));
        Assert.Throws<ArgumentException>(() => new PageAllocator(memory, new PageAllocatorOptions { PcpBatch = 32, PcpHigh = 16 }));
    }

    [Fact]
    public void MemorySystemComposesTheLayers()
    {
        using var sys = NewSystem(8);
        Assert.Same(sys.Memory, sys.Pages.Memory);
        byte* page = sys.Pages.GetZeroedPage(Gfp.Kernel);
        Assert.True(sys.Memory.Contains(page));
        Assert.Equal((long)(page - sys.Memory.ContiguousBase), sys.Memory.VirtToPhys(page));
        sys.Pages.FreePage(page);
    }
}
