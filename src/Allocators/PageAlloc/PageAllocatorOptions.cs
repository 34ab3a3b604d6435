namespace Allocators.PageAlloc;

/// <summary>Tunables of the page allocator.</summary>
public sealed class PageAllocatorOptions
{
    /// <summary>Pages moved between a per-thread list and the zone at a time (pcp batch), 1..1024. Default 16.</summary>
    public int PcpBatch { get; init; } = 16;

    /// <summary>
    /// Most order-0 pages a per-thread list keeps before it gives a batch back (pcp high), <see cref="PcpBatch"/>..65536.
    /// Default 64.
    /// </summary>
    public int PcpHigh { get; init; } = 64;

    /// <summary>Overrides min_free_kbytes (otherwise sqrt(lowmem_kbytes * 16) clamped to 128..262144).</summary>
    public long? MinFreeKbytes { get; init; }

    /// <summary>watermark_scale_factor in 1/10000 of managed memory, 1..3000 (the kernel's range). Default 10.</summary>
    public int WatermarkScaleFactor { get; init; } = 10;

    /// <summary>Give free max-order blocks above the high watermark back to the host. Default true.</summary>
    public bool ReleaseFreeMemory { get; init; } = true;

    /// <summary>
    /// How long after a free makes blocks reportable the report runs, on a worker (the kernel's PAGE_REPORTING_DELAY,
    /// 2 s): memory freed and soon allocated again is not given back and faulted in anew each time. Zero reports
    /// synchronously in the freeing thread. Default 2 s.
    /// </summary>
    public TimeSpan FreePageReportingDelay { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>In the sparse model, hot-add a section when an allocation would fail. Default true.</summary>
    public bool AutoGrow { get; init; } = true;

    /// <summary>
    /// Receives the allocator's warnings in the kernel's words: "page allocation failure" for a failed request without
    /// <see cref="Gfp.NoWarn"/>, "page allocation stalls for" for a <see cref="Gfp.NoFail"/> request still waiting after
    /// <see cref="StallWarningInterval"/>, and misuse warnings (WARN_ON_ONCE). Default: none.
    /// </summary>
    public Action<string>? Warn { get; init; }

    /// <summary>
    /// How long a <see cref="Gfp.NoFail"/> request may wait for memory before a stall is reported, and again after each
    /// further interval while it waits: a warning to <see cref="Warn"/>, <see cref="PageAllocator.AllocationStalled"/>
    /// and the <c>allocators.pages.alloc_stalls</c> counter. Must be positive. Default 10 s (the kernel's interval).
    /// </summary>
    public TimeSpan StallWarningInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The most pages of <see cref="PcpBatch"/>: a refill gathers a batch on the stack.</summary>
    internal const int MaxPcpBatch = 1024;

    /// <summary>The most pages of <see cref="PcpHigh"/>: every thread keeps a ring of about twice this per zone.</summary>
    internal const int MaxPcpHigh = 65536;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first value out of range.</summary>
    internal void Validate()
    {
        if (PcpBatch is < 1 or > MaxPcpBatch)
            throw new ArgumentException($"PcpBatch must be 1..{MaxPcpBatch}, was {PcpBatch}.", nameof(PcpBatch));
        if (PcpHigh < PcpBatch || PcpHigh > MaxPcpHigh)
            throw new ArgumentException($"PcpHigh must be PcpBatch ({PcpBatch})..{MaxPcpHigh}, was {PcpHigh}.", nameof(PcpHigh));
        if (MinFreeKbytes is < 0)
            throw new ArgumentException($"MinFreeKbytes must not be negative, was {MinFreeKbytes}.", nameof(MinFreeKbytes));
        if (WatermarkScaleFactor is < 1 or > 3000)
            throw new ArgumentException($"WatermarkScaleFactor must be 1..3000, was {WatermarkScaleFactor}.", nameof(WatermarkScaleFactor));
        if (FreePageReportingDelay < TimeSpan.Zero)
            throw new ArgumentException($"FreePageReportingDelay must not be negative, was {FreePageReportingDelay}.", nameof(FreePageReportingDelay));
        if (StallWarningInterval <= TimeSpan.Zero)
            throw new ArgumentException($"StallWarningInterval must be positive, was {StallWarningInterval}.", nameof(StallWarningInterval));
    }
}
