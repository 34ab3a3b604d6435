using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Highmem;

/// <summary>The direct map; systems meant without the split say <see cref="PhysicalMemoryOptions.AllMemoryLow"/>, whatever ALLOCATORS_HIGHMEM says.</summary>
public sealed unsafe class DirectMapTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public void LowMemoryIsReadAndWrittenThroughTheDirectMap()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow } });
        KernelAddressSpace kernel = sys.Kernel;
        Assert.Equal(VirtualAddress.PageOffset + (ulong)(64 * MiB), kernel.HighMemory);
        PageFrame* page = sys.Pages.AllocPages(Gfp.Kernel, 0);
        long* host = (long*)sys.Pages.AddressOf(page);
        host[1] = 0x1234_5678_9abc;
        ulong va = kernel.PageAddress(page);
        Assert.Equal(VirtualAddress.PageOffset + ((ulong)page->Pfn << 12), va);
        Assert.Equal(0x1234_5678_9abcL, kernel.Read<long>(va + 8));
        kernel.Write(va + 16, 42L);
        Assert.Equal(42L, host[2]);
        Assert.Equal((ulong)page->Pfn << 12, kernel.PhysicalAddressOf(va));
        Assert.Equal(va, kernel.DirectMapAddressOf((ulong)page->Pfn << 12));
        Assert.True(kernel.VirtToPage(va + 100) == page);
        Assert.False(kernel.IsHighMem(page));
        PageTableEntry leaf = kernel.GetPte(va);
        Assert.True(leaf.Present);
        Assert.True(leaf.Flags.HasFlag(PteFlags.Huge)); // a 2 MiB leaf: 64 MiB holds no whole gigabyte
        Assert.False(leaf.Flags.HasFlag(PteFlags.User));
        sys.Pages.FreePages(page, 0);
        Assert.Throws<ArgumentException>(() => kernel.PhysicalAddressOf(kernel.HighMemory));
    }

    [Fact]
    public void AWholeGigabyteIsOnePudLeaf()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 1024 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow } });
        KernelAddressSpace kernel = sys.Kernel;
        string dump = kernel.DumpPageTable(VirtualAddress.PageOffset + (ulong)(512 * MiB));
        Assert.DoesNotContain("PMD", dump); // the walk stops at the PUD leaf
        PageFrame* page = sys.Pages.AllocPages(Gfp.Kernel, 0);
        *(int*)sys.Pages.AddressOf(page) = 7;
        Assert.Equal(7, kernel.Read<int>(kernel.PageAddress(page)));
        sys.Pages.FreePages(page, 0);
    }

    [Fact]
    public void HighMemoryHasNoDirectMappingAndOnlyHighmemCallersGetIt()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = 32 * MiB } });
        KernelAddressSpace kernel = sys.Kernel;
        Assert.Equal(VirtualAddress.PageOffset + (ulong)(32 * MiB), kernel.HighMemory);
        Assert.Contains("zone  HighMem", sys.Pages.BuddyInfo());
        Assert.Contains("pgalloc_high ", sys.Pages.VmStat());

        PageFrame* high = sys.Pages.AllocPages(Gfp.HighUser, 0);
        Assert.True(kernel.IsHighMem(high));
        Assert.Equal(ZoneType.HighMem, sys.Pages.Zones.Single(z => z.Id == high->ZoneId).Type);
        Assert.Equal(0UL, kernel.PageAddress(high));
        Assert.Throws<KernelOopsException>(() => kernel.Read<long>(VirtualAddress.PageOffset + ((ulong)high->Pfn << 12)));
        sys.Pages.FreePages(high, 0);

        var kernelPages = new List<nint>();
        for (int i = 0; i < 2000; i++) kernelPages.Add((nint)sys.Pages.AllocPages(Gfp.Kernel, 0));
        Assert.All(kernelPages, p => Assert.False(kernel.IsHighMem((PageFrame*)p)));
        foreach (nint p in kernelPages) sys.Pages.FreePages((PageFrame*)p, 0);
        void* obj = sys.Slab.Kmalloc(128);
        Assert.False(kernel.IsHighMem(sys.Memory.VirtToPage(obj)));
        sys.Slab.Kfree(obj);
    }

    [Fact]
    public void HotAddedMemoryIsDirectMappedAndLeavesTheMapWhenRemoved()
    {
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32 * MiB, Model = MemoryModel.Sparse, SectionSize = 8 * MiB, MaxSize = 64 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow },
        });
        KernelAddressSpace kernel = sys.Kernel;
        int section = sys.Pages.AddMemory();
        Assert.True(section >= 0);
        ulong start = sys.Memory.SectionStartPfn(section);
        // Write into an allocated block of the new section, not into free memory (KASAN and init_on_free own that).
        var taken = new List<nint>();
        PageFrame* block = null;
        while (block == null)
        {
            PageFrame* b = sys.Pages.AllocPages(Gfp.Kernel, PageAllocator.MaxOrder);
            Assert.True(b != null, "no max-order block from the hot-added section");
            if ((ulong)b->Pfn - start < (ulong)(8 * MiB >> 12)) block = b;
            taken.Add((nint)b);
        }
        ulong pfn = (ulong)block->Pfn + 3;
        *(long*)sys.Memory.PfnToVirt(pfn) = 99;
        ulong va = kernel.DirectMapAddressOf(pfn << 12);
        Assert.Equal(99L, kernel.Read<long>(va));
        foreach (nint b in taken) sys.Pages.FreePages((PageFrame*)b, PageAllocator.MaxOrder);
        sys.Pages.RemoveMemory(section);
        Assert.Throws<KernelOopsException>(() => kernel.Read<long>(va));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-4 * MiB)]
    [InlineData(3 * MiB)]
    public void ALowMemoryLimitThatIsNotAPositiveMultipleOf4MiBIsRefused(long limit)
    {
        var options = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = limit };
        Assert.Equal(nameof(PhysicalMemoryOptions.LowMemoryLimit), Assert.Throws<ArgumentException>(options.Validate).ParamName);
    }

    [Fact]
    public void ALowMemoryLimitInsideTheDmaZonesIsRefused()
    {
        var ex = Assert.Throws<ArgumentException>(() => new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = 4 * MiB } }));
        Assert.Contains("DMA", ex.Message);
    }
}
