namespace Allocators.PageAlloc;

/// <summary>The memory zones of a node, lowest first (the kernel's <c>enum zone_type</c>).</summary>
public enum ZoneType
{
    /// <summary>Memory for legacy DMA devices (ZONE_DMA): the first pages of node 0.</summary>
    Dma = 0,
    /// <summary>Memory addressable with 32 bits (ZONE_DMA32).</summary>
    Dma32 = 1,
    /// <summary>Everything else that the kernel maps permanently (ZONE_NORMAL).</summary>
    Normal = 2,
    /// <summary>
    /// Memory above <see cref="Physical.PhysicalMemoryOptions.LowMemoryLimit"/> (ZONE_HIGHMEM): not in the kernel's
    /// direct map, used by callers that ask with <see cref="Gfp.HighMem"/> and map it on demand (kmap). Empty, and
    /// left out of the views, unless the split is configured.
    /// </summary>
    HighMem = 3,
}

/// <summary>Helpers over <see cref="ZoneType"/>.</summary>
public static class ZoneTypeExtensions
{
    /// <summary>Number of zone types per node.</summary>
    public const int Count = 4;

    /// <summary>The kernel's name for the zone as printed in /proc/buddyinfo.</summary>
    public static string KernelName(this ZoneType type) => type switch
    {
        ZoneType.Dma => "DMA",
        ZoneType.Dma32 => "DMA32",
        ZoneType.HighMem => "HighMem",
        _ => "Normal",
    };
}
