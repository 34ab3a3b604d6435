namespace Allocators.Filemap;

/// <summary>The page cache's tunables: the kernel's readahead window and <c>/proc/sys/vm/dirty_*</c> settings.</summary>
public sealed class PageCacheOptions
{
    /// <summary>Largest readahead window in pages (the block device's <c>ra_pages</c>; 32 = 128 KiB as in the kernel).</summary>
    public int ReadaheadPages { get; init; } = 32;

    /// <summary>Age at which a dirty file is written back by the flusher (vm.dirty_expire_centisecs, 30 s).</summary>
    public TimeSpan DirtyExpire { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the flusher wakes (vm.dirty_writeback_centisecs, 5 s); <see cref="TimeSpan.Zero"/> disables periodic writeback.</summary>
    public TimeSpan DirtyWritebackInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Percent of dirtyable memory (free + file pages) at which the flusher starts early (vm.dirty_background_ratio, 10).</summary>
    public int DirtyBackgroundRatio { get; init; } = 10;

    /// <summary>Percent of dirtyable memory at which writers write back themselves (vm.dirty_ratio, 20; balance_dirty_pages).</summary>
    public int DirtyRatio { get; init; } = 20;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first value out of range.</summary>
    public void Validate()
    {
        if (ReadaheadPages is < 0 or > 65536)
            throw new ArgumentException($"ReadaheadPages must be 0..65536, was {ReadaheadPages}.", nameof(ReadaheadPages));
        if (DirtyExpire < TimeSpan.Zero)
            throw new ArgumentException($"DirtyExpire must not be negative, was {DirtyExpire}.", nameof(DirtyExpire));
        if (DirtyWritebackInterval < TimeSpan.Zero)
            throw new ArgumentException($"DirtyWritebackInterval must not be negative, was {DirtyWritebackInterval}.", nameof(DirtyWritebackInterval));
        if (DirtyBackgroundRatio is < 1 or > 100)
            throw new ArgumentException($"DirtyBackgroundRatio must be 1..100, was {DirtyBackgroundRatio}.", nameof(DirtyBackgroundRatio));
        if (DirtyRatio is < 1 or > 100 || DirtyRatio < DirtyBackgroundRatio)
            throw new ArgumentException($"DirtyRatio must be 1..100 and at least DirtyBackgroundRatio, was {DirtyRatio}.", nameof(DirtyRatio));
    }
}
