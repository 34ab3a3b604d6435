namespace Allocators.Cli.Inspection;

/// <summary>Everything <c>allocators inspect</c> found in one target.</summary>
internal sealed record InspectReport(string Target, IReadOnlyList<SystemReport> Systems);

/// <summary>One memory system of the target, as read from its native metadata.</summary>
internal sealed record SystemReport(
    int Id,
    int Nodes,
    long PagesPerSection,
    int OnlineSections,
    IReadOnlyList<ZoneReport> Zones,
    IReadOnlyList<CacheReport> Caches,
    IReadOnlyList<MeminfoItem> Meminfo,
    string BuddyInfo,
    string SlabInfo,
    string MeminfoText,
    IReadOnlyList<CacheLeaks>? Leaks,
    string? VmallocInfo)
{
    /// <summary>True when the target has a vmalloc layer (its vmallocinfo was read).</summary>
    public bool VmallocPresent => VmallocInfo is not null;
}

/// <summary>One zone: the buddyinfo row and the zoneinfo basics.</summary>
internal sealed record ZoneReport(
    int Node, string Zone, long FreePages, long ManagedPages, long PresentPages, long SpannedPages,
    long WatermarkMin, long WatermarkLow, long WatermarkHigh, long[] FreeBlocks);

/// <summary>One slab cache: its /proc/slabinfo columns.</summary>
internal sealed record CacheReport(
    string Name, long ActiveObjects, long TotalObjects, int ObjectSize, int SlotSize, int ObjectsPerSlab,
    int PagesPerSlab, long Slabs, string Flags);

/// <summary>One /proc/meminfo line.</summary>
internal sealed record MeminfoItem(string Name, long Kb);

/// <summary>
/// The live objects of one StoreUser cache, grouped by allocation site; objects freed into KASAN's quarantine (allocated
/// in their slab until it gives them back) are counted apart, never as live.
/// </summary>
internal sealed record CacheLeaks(string Cache, int ObjectSize, long LiveObjects, long Slabs, IReadOnlyList<LeakSite> Sites, IReadOnlyList<string> Problems,
    long QuarantinedObjects = 0);

/// <summary>Live objects allocated at one call site (like /sys/kernel/slab/&lt;cache&gt;/alloc_calls).</summary>
internal sealed record LeakSite(string Site, long Count, long Bytes, string Threads, string Cpus, IReadOnlyList<string> SampleAddresses);
