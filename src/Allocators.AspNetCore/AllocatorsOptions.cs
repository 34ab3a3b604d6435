using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.AspNetCore;

/// <summary>
/// The configuration of the <see cref="MemorySystem"/> that
/// <see cref="AllocatorsServiceCollectionExtensions.AddAllocators(Microsoft.Extensions.DependencyInjection.IServiceCollection, Action{AllocatorsOptions}?)"/>
/// registers: settable, so that it binds from configuration (section <see cref="SectionName"/>) and code can change it.
/// Sizes are in MiB; durations are <see cref="TimeSpan"/>s ("00:00:30"); every default is
/// <see cref="MemorySystemOptions"/>'s. <see cref="ToMemorySystemOptions"/> gives the system's options.
/// </summary>
public sealed class AllocatorsOptions
{
    /// <summary>The configuration section these options are usually bound from.</summary>
    public const string SectionName = "Allocators";

    private const int MiB = 1 << 20;
    private static readonly MemorySystemOptions Defaults = new();

    /// <summary>Initial present memory, in MiB: a multiple of 4 (<see cref="PhysicalMemoryOptions.Size"/>).</summary>
    public int ArenaSizeMiB { get; set; } = (int)(Defaults.Physical.Size / MiB);

    /// <summary>Where the arena's bytes come from (<see cref="PhysicalMemoryOptions.Backing"/>).</summary>
    public ArenaBacking Backing { get; set; } = Defaults.Physical.Backing;

    /// <summary>Flat, or Sparse with hot-pluggable sections (<see cref="PhysicalMemoryOptions.Model"/>).</summary>
    public MemoryModel Model { get; set; } = Defaults.Physical.Model;

    /// <summary>Section size of the sparse model, in MiB (<see cref="PhysicalMemoryOptions.SectionSize"/>).</summary>
    public int SectionSizeMiB { get; set; } = (int)(Defaults.Physical.SectionSize / MiB);

    /// <summary>Most memory the sparse model may grow to, in MiB; null: <see cref="ArenaSizeMiB"/> (<see cref="PhysicalMemoryOptions.MaxSize"/>).</summary>
    public int? MaxArenaSizeMiB { get; set; }

    /// <summary>Number of emulated NUMA nodes, 1..8 (<see cref="PhysicalMemoryOptions.Nodes"/>).</summary>
    public int Nodes { get; set; } = Defaults.Physical.Nodes;

    /// <summary>Pages moved between a per-thread list and a zone at a time (<see cref="PageAllocatorOptions.PcpBatch"/>).</summary>
    public int PcpBatch { get; set; } = Defaults.PageAllocator.PcpBatch;

    /// <summary>Most order-0 pages a per-thread list keeps (<see cref="PageAllocatorOptions.PcpHigh"/>).</summary>
    public int PcpHigh { get; set; } = Defaults.PageAllocator.PcpHigh;

    /// <summary>Overrides min_free_kbytes (<see cref="PageAllocatorOptions.MinFreeKbytes"/>).</summary>
    public long? MinFreeKbytes { get; set; }

    /// <summary>watermark_scale_factor, 1..3000 (<see cref="PageAllocatorOptions.WatermarkScaleFactor"/>).</summary>
    public int WatermarkScaleFactor { get; set; } = Defaults.PageAllocator.WatermarkScaleFactor;

    /// <summary>Give free max-order blocks back to the host (<see cref="PageAllocatorOptions.ReleaseFreeMemory"/>).</summary>
    public bool ReleaseFreeMemory { get; set; } = Defaults.PageAllocator.ReleaseFreeMemory;

    /// <summary>Delay of free page reporting (<see cref="PageAllocatorOptions.FreePageReportingDelay"/>).</summary>
    public TimeSpan FreePageReportingDelay { get; set; } = Defaults.PageAllocator.FreePageReportingDelay;

    /// <summary>In the sparse model, hot-add a section rather than fail (<see cref="PageAllocatorOptions.AutoGrow"/>).</summary>
    public bool AutoGrow { get; set; } = Defaults.PageAllocator.AutoGrow;

    /// <summary>
    /// How long a NoFail request waits before each "page allocation stalls" warning
    /// (<see cref="PageAllocatorOptions.StallWarningInterval"/>).
    /// </summary>
    public TimeSpan StallWarningInterval { get; set; } = Defaults.PageAllocator.StallWarningInterval;

    /// <summary>
    /// Debug flags of every kmalloc cache, e.g. "RedZone, Poison" or "Debug" (<see cref="SlabAllocatorOptions.KmallocFlags"/>).
    /// </summary>
    public SlabFlags KmallocFlags { get; set; } = Defaults.Slab.KmallocFlags;

    /// <summary>The kmalloc size classes: Kernel or Fine (<see cref="SlabAllocatorOptions.KmallocSizeClasses"/>).</summary>
    public KmallocSizeClasses KmallocSizeClasses { get; set; } = Defaults.Slab.KmallocSizeClasses;

    /// <summary>Every free claims its object atomically (<see cref="SlabAllocatorOptions.SerializedFrees"/>).</summary>
    public bool SerializedFrees { get; set; } = Defaults.Slab.SerializedFrees;

    /// <summary>Give cached and free memory back after this long without page activity; null never (<see cref="MemorySystemOptions.IdleTrimAfter"/>).</summary>
    public TimeSpan? IdleTrimAfter { get; set; } = Defaults.IdleTrimAfter;

    /// <summary>
    /// Frames above this many MiB form ZONE_HIGHMEM (the low/high split, <see cref="PhysicalMemoryOptions.LowMemoryLimit"/>);
    /// 0: all memory low whatever ALLOCATORS_HIGHMEM says (the kernel's <c>highmem=0</c>,
    /// <see cref="PhysicalMemoryOptions.AllMemoryLow"/>); null: as ALLOCATORS_HIGHMEM says, all low when it is unset.
    /// </summary>
    public int? LowMemoryLimitMiB { get; set; }

    /// <summary>
    /// The checked modes in <see cref="CheckedModeOptions.EnvironmentVariable"/>'s syntax, e.g.
    /// <c>"kasan,init_on_free"</c> (<see cref="CheckedModeOptions.Parse"/>); null: what that variable says, else none.
    /// </summary>
    public string? Checks { get; set; }

    /// <summary>The page cache's readahead window in pages (<see cref="PageCacheOptions.ReadaheadPages"/>).</summary>
    public int ReadaheadPages { get; set; } = Defaults.PageCache.ReadaheadPages;

    /// <summary>How long a page may stay dirty before the flusher writes it (<see cref="PageCacheOptions.DirtyExpire"/>).</summary>
    public TimeSpan DirtyExpire { get; set; } = Defaults.PageCache.DirtyExpire;

    /// <summary>How often the flusher wakes (<see cref="PageCacheOptions.DirtyWritebackInterval"/>).</summary>
    public TimeSpan DirtyWritebackInterval { get; set; } = Defaults.PageCache.DirtyWritebackInterval;

    /// <summary>Percent of dirtyable memory at which the flusher starts (<see cref="PageCacheOptions.DirtyBackgroundRatio"/>).</summary>
    public int DirtyBackgroundRatio { get; set; } = Defaults.PageCache.DirtyBackgroundRatio;

    /// <summary>Percent of dirtyable memory at which writers are throttled (<see cref="PageCacheOptions.DirtyRatio"/>).</summary>
    public int DirtyRatio { get; set; } = Defaults.PageCache.DirtyRatio;

    /// <summary>
    /// A swap file to turn on at startup (<see cref="MemorySystem.Swapon"/>); when it does not exist it is made with
    /// <see cref="SwapFileSizeMiB"/> (mkswap). Null for no swap.
    /// </summary>
    public string? SwapFile { get; set; }

    /// <summary>Size of the swap file made when <see cref="SwapFile"/> does not exist.</summary>
    public int SwapFileSizeMiB { get; set; } = 256;

    /// <summary>Priority of <see cref="SwapFile"/> (-1: below every device added before).</summary>
    public int SwapPriority { get; set; } = -1;

    /// <summary>The options of the system these describe (not validated: <see cref="MemorySystemOptions.Validate"/> does that).</summary>
    public MemorySystemOptions ToMemorySystemOptions() => new()
    {
        Physical = new PhysicalMemoryOptions
        {
            Size = (long)ArenaSizeMiB * MiB,
            Backing = Backing,
            Model = Model,
            SectionSize = (long)SectionSizeMiB * MiB,
            MaxSize = MaxArenaSizeMiB is { } max ? (long)max * MiB : null,
            Nodes = Nodes,
            LowMemoryLimit = LowMemoryLimitMiB switch { null => null, 0 => PhysicalMemoryOptions.AllMemoryLow, int low => (long)low * MiB },
            Checks = Checks is { } checks ? CheckedModeOptions.Parse(checks) : new CheckedModeOptions(),
        },
        PageAllocator = new PageAllocatorOptions
        {
            PcpBatch = PcpBatch,
            PcpHigh = PcpHigh,
            MinFreeKbytes = MinFreeKbytes,
            WatermarkScaleFactor = WatermarkScaleFactor,
            ReleaseFreeMemory = ReleaseFreeMemory,
            FreePageReportingDelay = FreePageReportingDelay,
            AutoGrow = AutoGrow,
            StallWarningInterval = StallWarningInterval,
        },
        Slab = new SlabAllocatorOptions
        {
            KmallocFlags = KmallocFlags,
            KmallocSizeClasses = KmallocSizeClasses,
            SerializedFrees = SerializedFrees,
        },
        PageCache = new PageCacheOptions
        {
            ReadaheadPages = ReadaheadPages,
            DirtyExpire = DirtyExpire,
            DirtyWritebackInterval = DirtyWritebackInterval,
            DirtyBackgroundRatio = DirtyBackgroundRatio,
            DirtyRatio = DirtyRatio,
        },
        IdleTrimAfter = IdleTrimAfter,
    };
}
