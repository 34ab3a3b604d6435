using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Mmu;

/// <summary>A memory system plus a kernel address space; on dispose checks that every page came back.</summary>
internal sealed class MmuFixture : IDisposable
{
    /// <param name="arenaBytes">The arena's size.</param>
    /// <param name="checks">The checked modes; null: as ALLOCATORS_CHECKS says.</param>
    public MmuFixture(long arenaBytes = 64L << 20, CheckedModeOptions? checks = null)
    {
        System = new MemorySystem(new MemorySystemOptions
        {
            // The low/high split as ALLOCATORS_HIGHMEM says (ALLOCATORS_HIGHMEM=50% runs every MMU test split).
            Physical = new PhysicalMemoryOptions
            {
                Size = arenaBytes,
                Checks = checks ?? new CheckedModeOptions(),
            },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false },
        });
        System.Pages.DrainAllPages();
        InitialBuddy = System.Pages.BuddyInfo();
        Kernel = new KernelAddressSpace(System.Pages);
    }

    public MemorySystem System { get; }

    public KernelAddressSpace Kernel { get; }

    public string InitialBuddy { get; }

    public PageAllocator Pages => System.Pages;

    public AddressSpace NewProcess(string name = "test") => new(Kernel, name);

    /// <summary>Disposes the kernel and asserts the page allocator is back to where it started.</summary>
    public void AssertAllFreed()
    {
        Kernel.Dispose();
        Pages.DrainAllPages();
        Assert.Equal(0, Pages.NrPageTablePages);
        Assert.Equal(InitialBuddy, Pages.BuddyInfo());
    }

    public void Dispose()
    {
        if (!Kernel.IsDisposed) Kernel.Dispose();
        System.Dispose();
    }
}
