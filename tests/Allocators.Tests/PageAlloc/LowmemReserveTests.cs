using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// lowmem_reserve (setup_per_zone_lowmem_reserve, sysctl_lowmem_reserve_ratio 256/256/32): a lower zone keeps a
/// share of the zones above it from allocations that could have used them, so user pages that fall back from
/// HighMem (or Normal) cannot take the memory only the kernel (or a DMA device) can use.
/// </summary>
public unsafe class LowmemReserveTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public void EachZoneKeepsItsShareOfTheZonesAboveAsTheKernelComputesIt()
    {
        // 64 MiB: DMA 4 MiB (1024 pages), DMA32 16 MiB (4096), Normal 44 MiB (11264); no HighMem.
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow } });
        Zone dma = sys.Pages.GetZone(0, ZoneType.Dma), dma32 = sys.Pages.GetZone(0, ZoneType.Dma32), normal = sys.Pages.GetZone(0, ZoneType.Normal);
        Assert.Equal((1024L, 4096L, 11264L), (dma.ManagedPages, dma32.ManagedPages, normal.ManagedPages));
        Assert.Equal([0, 4096 / 256, (4096 + 11264) / 256, (4096 + 11264) / 256], Reserves(dma));
        Assert.Equal([0, 0, 11264 / 256, 11264 / 256], Reserves(dma32));
        Assert.Equal([0, 0, 0, 0], Reserves(normal));
        Assert.Contains($"        protection: (0, {4096 / 256}, {(4096 + 11264) / 256})\n", sys.Pages.ZoneInfo());
    }

    [Fact]
    public void UserPagesFallingBackFromHighMemLeaveTheKernelItsReserveOfLowMemory()
    {
        // 16 MiB split at 8 MiB: Normal 2048 pages keeps 2048 / 32 = 64 of them from GFP_HIGHUSER.
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16 * MiB, LowMemoryLimit = 8 * MiB },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false, AutoGrow = false },
        });
        Zone normal = sys.Pages.GetZone(0, ZoneType.Normal), high = sys.Pages.GetZone(0, ZoneType.HighMem);
        Assert.Equal(64, normal.LowmemReserve(ZoneType.HighMem));
        Assert.InRange(high.WatermarkMin, 32, 128); // managed / 1024, clamped: the kernel keeps little high memory free
        var user = new List<nint>();
        for (PageFrame* p; (p = sys.Pages.AllocPages((Gfp.HighUser & ~Gfp.DirectReclaim) | Gfp.NoWarn, 0)) != null;) user.Add((nint)p);
        sys.Pages.DrainAllPages();
        Assert.True(normal.FreePages >= normal.WatermarkMin + 64, $"user pages left {normal.FreePages} low pages (min {normal.WatermarkMin} + reserve 64)");

        // The kernel still gets the reserve.
        var kernel = new List<nint>();
        for (PageFrame* p; kernel.Count < 64 && (p = sys.Pages.AllocPages((Gfp.Kernel & ~Gfp.DirectReclaim) | Gfp.NoWarn, 0)) != null;) kernel.Add((nint)p);
        Assert.Equal(64, kernel.Count);
        foreach (nint p in user.Concat(kernel)) sys.Pages.FreePages((PageFrame*)p, 0);
    }

    [Fact]
    public void MemAvailableLeavesOutTheReserves()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow } });
        sys.Pages.DrainAllPages();
        long reserve = 0;
        foreach (Zone z in sys.Pages.Zones)
        {
            long largest = Reserves(z).Max();
            reserve += Math.Min(largest + z.WatermarkHigh, z.ManagedPages);
        }
        var items = sys.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);
        Assert.Equal((sys.Pages.NrFreePages - reserve) * 4, items["MemAvailable"]);
    }

    [Fact]
    public void AHighMemZoneHasAClampedMinAndGapsFromItsShare()
    {
        // 16 MiB split at 8 MiB: min_free_kbytes = sqrt(8192 * 16) = 362 -> 90 pages, HighMem's share 90 of them.
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 16 * MiB, LowMemoryLimit = 8 * MiB } });
        Zone high = sys.Pages.GetZone(0, ZoneType.HighMem), normal = sys.Pages.GetZone(0, ZoneType.Normal);
        Assert.Equal((90L, 112L, 134L), (normal.WatermarkMin, normal.WatermarkLow, normal.WatermarkHigh));
        // min = clamp(2048 / 1024, 32, 128) = 32; gaps max(90 / 4, 2048 * 10 / 10000) = 22, as __setup_per_zone_wmarks.
        Assert.Equal((32L, 54L, 76L), (high.WatermarkMin, high.WatermarkLow, high.WatermarkHigh));
    }

    [Fact]
    public void AThreadHandlesHighMemRequestTakesHighMemFirst()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 16 * MiB, LowMemoryLimit = 8 * MiB } });
        PageAllocatorThread handle = sys.Pages.ThisThread();
        PageFrame* kernel = handle.AllocPages(Gfp.Kernel, 0); // fills the handle's cached Normal lists
        PageFrame* user = handle.AllocPages(Gfp.HighUser, 0);
        Assert.Equal(ZoneType.Normal, (ZoneType)(kernel->ZoneId % 4));
        Assert.Equal(ZoneType.HighMem, (ZoneType)(user->ZoneId % 4));
        handle.FreePages(kernel, 0);
        handle.FreePages(user, 0);
    }

    [Fact]
    public void WithTheSplitHotAddedHighMemoryGrowsTheArenaForUserPagesOnly()
    {
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16 * MiB, Model = MemoryModel.Sparse, SectionSize = 8 * MiB, MaxSize = 32 * MiB, LowMemoryLimit = 8 * MiB },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false },
        });
        var taken = new List<nint>();
        for (PageFrame* p; (p = sys.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn | Gfp.NoRetry, 0)) != null;) taken.Add((nint)p);
        Assert.True(sys.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 0) == null, "a lowmem page after low memory ran out");
        Assert.Equal(0, sys.Pages.SectionsAdded); // hot-added memory is high: no use to a GFP_KERNEL request
        for (int i = 0; i < 3000; i++)
        {
            PageFrame* p = sys.Pages.AllocPages(Gfp.HighUser | Gfp.NoWarn, 0);
            Assert.True(p != null, $"user page {i} not allocated");
            taken.Add((nint)p);
        }
        Assert.True(sys.Pages.SectionsAdded >= 1, "the arena did not grow for user pages");
        foreach (nint p in taken) sys.Pages.FreePages((PageFrame*)p, 0);
    }

    private static long[] Reserves(Zone z) => [.. Enum.GetValues<ZoneType>().Select(z.LowmemReserve)];
}
