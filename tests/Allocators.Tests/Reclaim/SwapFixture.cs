using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// A memory system with a fixed arena (no growth) and a real swap file in a temporary directory; on dispose checks
/// that every page and swap slot came back, and deletes the file.
/// </summary>
internal sealed class SwapFixture : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-swap-").FullName;

    /// <param name="lowMemoryLimit">The low/high split; null: as ALLOCATORS_HIGHMEM says.</param>
    public SwapFixture(long arenaBytes = 16L << 20, long swapBytes = 96L << 20, bool swapon = true, long? lowMemoryLimit = null)
    {
        System = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = arenaBytes, LowMemoryLimit = lowMemoryLimit },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false, AutoGrow = false },
        });
        _ = System.Kernel;
        System.Pages.DrainAllPages();
        InitialBuddy = System.Pages.BuddyInfo();
        SwapPath = Path.Combine(_dir, "swapfile");
        SwapDevice.Mkswap(SwapPath, swapBytes);
        if (swapon) Device = System.Swapon(SwapPath);
    }

    public MemorySystem System { get; }

    public KernelAddressSpace Kernel => System.Kernel;

    public PageAllocator Pages => System.Pages;

    public ReclaimCounters Counters => System.Pages.ReclaimCounters;

    public string SwapPath { get; }

    public SwapDevice? Device { get; }

    public string InitialBuddy { get; }

    public string Dir => _dir;

    /// <summary>A process on the system's kernel.</summary>
    public AddressSpace NewProcess(string name = "test") => System.CreateAddressSpace();

    /// <summary>
    /// After every process is disposed: no swap slot, swap-cache page or LRU page is left, the invariants hold, and
    /// the page allocator is back where it started.
    /// </summary>
    public void AssertAllBack()
    {
        WaitForReclaim();
        // A swap-cache page whose last user went while reclaim held its lock waits for reclaim (as in Linux): run it.
        System.Reclaim(Pages.ManagedPages);
        AnonSwapChecks();
        Assert.Equal(0, Device?.UsedPages ?? 0);
        Assert.Equal(0, Kernel.SwapPages.Cached);
        Assert.Equal(0, Pages.Lru.Total(LruList.ActiveAnon) + Pages.Lru.Total(LruList.InactiveAnon));
        Pages.DrainAllPages();
        Assert.Equal(InitialBuddy, Pages.BuddyInfo());
    }

    /// <summary>Returns once kswapd and every direct reclaim are done.</summary>
    public void WaitForReclaim() => (Pages.Reclaimer as Allocators.Reclaim.Vmscan)?.WaitIdle();

    /// <summary>Runs the swap and LRU consistency checks.</summary>
    public void AnonSwapChecks()
    {
        if (Kernel.HasSwap) Kernel.Swap.CheckConsistency();
        Pages.Lru.CheckConsistency();
    }

    /// <summary>The stamp page <paramref name="i"/> of a region carries.</summary>
    public static long Stamp(int i, int seed = 1) => ((long)seed << 40) ^ (i * 0x9E3779B1L) ^ 0x5A5A;

    public void Dispose()
    {
        System.Dispose();
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }
}
