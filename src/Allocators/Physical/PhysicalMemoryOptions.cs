namespace Allocators.Physical;

/// <summary>Configuration of the physical memory arena and its NUMA/zone layout.</summary>
public sealed class PhysicalMemoryOptions
{
    /// <summary>One max-order block (4 MiB): the granularity of sizes, zones and sections.</summary>
    public const long BlockBytes = 4L << 20;

    /// <summary>Initial present memory in bytes (a multiple of 4 MiB). Default 256 MiB.</summary>
    public long Size { get; init; } = 256L << 20;

    /// <summary>Where the bytes come from. Default <see cref="ArenaBacking.NativeMemory"/>.</summary>
    public ArenaBacking Backing { get; init; } = ArenaBacking.NativeMemory;

    /// <summary>Flat (one section) or Sparse (hot-pluggable sections). Default Flat.</summary>
    public MemoryModel Model { get; init; } = MemoryModel.Flat;

    /// <summary>Section size for the sparse model: a power of two, at least 4 MiB. Default 128 MiB.</summary>
    public long SectionSize { get; init; } = 128L << 20;

    /// <summary>Most memory the sparse model may grow to (hot-add, automatic growth). Default: <see cref="Size"/>.</summary>
    public long? MaxSize { get; init; }

    /// <summary>Number of emulated NUMA nodes (1..8). Default 1.</summary>
    public int Nodes { get; init; } = 1;

    /// <summary>Size of the DMA zone at the start of node 0 (multiple of 4 MiB). Default: a small share.</summary>
    public long? DmaZoneSize { get; init; }

    /// <summary>Size of the DMA32 zone after the DMA zone on node 0 (multiple of 4 MiB). Default: a quarter of node 0.</summary>
    public long? Dma32ZoneSize { get; init; }

    /// <summary>
    /// The low/high memory split (a 32-bit kernel's ~896 MiB): physical memory from this many bytes on is high memory
    /// (ZONE_HIGHMEM), outside the kernel's direct map and mapped on demand with kmap. A multiple of 4 MiB above the
    /// DMA and DMA32 zones, or <see cref="AllMemoryLow"/>. Null (default): as <see cref="HighMemoryEnvironmentVariable"/>
    /// says, and all memory in the direct map (as on x86-64) when it is not set.
    /// </summary>
    public long? LowMemoryLimit { get; init; }

    /// <summary>
    /// A <see cref="LowMemoryLimit"/> that puts all memory in the direct map whatever
    /// <see cref="HighMemoryEnvironmentVariable"/> says (the kernel's <c>highmem=0</c>).
    /// </summary>
    public const long AllMemoryLow = long.MaxValue;

    /// <summary>
    /// The environment variable read as the default high-memory size of every arena that leaves
    /// <see cref="LowMemoryLimit"/> null, like the 32-bit kernel's <c>highmem=</c> boot parameter: a size
    /// (<c>64M</c>, <c>1G</c>, plain bytes) or a share of boot memory (<c>50%</c>). The split is rounded to 4 MiB and kept
    /// above the DMA and DMA32 zones; an arena too small for it stays all low.
    /// </summary>
    public const string HighMemoryEnvironmentVariable = "ALLOCATORS_HIGHMEM";

    // Read once; a malformed value is reported by Validate for the systems that would use it, not by a type
    // initializer that would break every options object for the life of the process.
    private static readonly (HighMemorySize? Size, string? Error) HighMemoryAtBoot = ReadHighMemoryVariable();

    /// <summary>The high-memory size used when <see cref="LowMemoryLimit"/> is null: <see cref="HighMemoryEnvironmentVariable"/>'s, or null for none.</summary>
    internal HighMemorySize? DefaultHighMemory { get; init; } = HighMemoryAtBoot.Size;

    /// <summary>Why <see cref="HighMemoryEnvironmentVariable"/> could not be read, or null.</summary>
    internal string? DefaultHighMemoryError { get; init; } = HighMemoryAtBoot.Error;

    private static (HighMemorySize?, string?) ReadHighMemoryVariable()
    {
        try { return (HighMemorySize.Parse(Environment.GetEnvironmentVariable(HighMemoryEnvironmentVariable)), null); }
        catch (ArgumentException e) { return (null, e.Message); }
    }

    /// <summary>The checked modes (init_on_alloc/free, randomisation, KASAN, KFENCE), all off by default.</summary>
    public CheckedModeOptions Checks { get; init; } = new();

    /// <summary>Maps a CPU number to its home node; default spreads CPUs over nodes in equal blocks.</summary>
    public int[]? CpuToNode { get; init; }

    /// <summary>The high-memory bytes <see cref="DefaultHighMemory"/> asks of this arena; the zone layout turns them into a split.</summary>
    internal long DefaultHighMemoryBytes => DefaultHighMemory?.BytesOf(Size) ?? 0;

    internal long EffectiveMaxSize => Model == MemoryModel.Flat ? Size : Math.Max(MaxSize ?? Size, Size);

    internal void Validate()
    {
        if (!Enum.IsDefined(Backing))
            throw new ArgumentException($"Backing must be one of {string.Join(", ", Enum.GetNames<ArenaBacking>())}, was {Backing}.", nameof(Backing));
        if (!Enum.IsDefined(Model))
            throw new ArgumentException($"Model must be one of {string.Join(", ", Enum.GetNames<MemoryModel>())}, was {Model}.", nameof(Model));
        if (Size < BlockBytes || Size % BlockBytes != 0)
            throw new ArgumentException($"Size must be a positive multiple of 4 MiB, was {Size}.", nameof(Size));
        if (Nodes is < 1 or > 8)
            throw new ArgumentException($"Nodes must be 1..8, was {Nodes}.", nameof(Nodes));
        if (Model == MemoryModel.Sparse)
        {
            if (SectionSize < BlockBytes || (SectionSize & (SectionSize - 1)) != 0)
                throw new ArgumentException($"SectionSize must be a power of two of at least 4 MiB, was {SectionSize}.", nameof(SectionSize));
            if (Size % SectionSize != 0)
                throw new ArgumentException($"Size ({Size}) must be a multiple of SectionSize ({SectionSize}).", nameof(Size));
            if (EffectiveMaxSize % SectionSize != 0)
                throw new ArgumentException($"MaxSize ({EffectiveMaxSize}) must be a multiple of SectionSize ({SectionSize}).", nameof(MaxSize));
        }
        foreach (var (value, name) in new[] { (DmaZoneSize, nameof(DmaZoneSize)), (Dma32ZoneSize, nameof(Dma32ZoneSize)) })
        {
            if (value is { } v && (v < 0 || v % BlockBytes != 0))
                throw new ArgumentException($"{name} must be a non-negative multiple of 4 MiB, was {v}.", name);
        }
        if (LowMemoryLimit is null && DefaultHighMemoryError is { } error)
            throw new ArgumentException(error, nameof(LowMemoryLimit));
        if (LowMemoryLimit is { } low && low != AllMemoryLow && (low <= 0 || low % BlockBytes != 0))
            throw new ArgumentException($"LowMemoryLimit must be a positive multiple of 4 MiB (the kernel needs some low memory), was {low}.", nameof(LowMemoryLimit));
        ArgumentNullException.ThrowIfNull(Checks, nameof(Checks));
        Checks.Validate();
        if (Backing == ArenaBacking.MemFd && !OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("ArenaBacking.MemFd needs Linux (memfd_create).");
    }
}
