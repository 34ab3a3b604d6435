namespace Allocators.Filemap;

/// <summary>The page cache's share of /proc/meminfo and /proc/vmstat. Thread-safe; each value is read atomically.</summary>
public sealed class PageCacheStatistics
{
    internal long NrFilePages;
    internal long NrDirty;
    internal long NrWriteback;
    internal long NrMapped;
    internal long PgPgIn;
    internal long PgPgOut;
    internal long PgMajFault;
    internal long ReadaheadPages;
    internal long DirtyThrottled;
    internal long WritebackErrors;
    internal long ReclaimWrites;      // pages reclaim wrote back itself (pageout)
    internal long Dropped;

    /// <summary>Pages in the page cache (nr_file_pages; meminfo Cached).</summary>
    public long FilePages => Interlocked.Read(ref NrFilePages);

    /// <summary>Dirty page-cache pages (nr_dirty; meminfo Dirty).</summary>
    public long DirtyPages => Interlocked.Read(ref NrDirty);

    /// <summary>Pages being written back (nr_writeback; meminfo Writeback).</summary>
    public long WritebackPages => Interlocked.Read(ref NrWriteback);

    /// <summary>Page-cache pages mapped by page tables, once per mapping PTE (nr_mapped; meminfo Mapped).</summary>
    public long MappedPages => Interlocked.Read(ref NrMapped);

    /// <summary>KiB read from files into the cache (pgpgin).</summary>
    public long PagedInKb => Interlocked.Read(ref PgPgIn);

    /// <summary>KiB written from the cache to files (pgpgout).</summary>
    public long PagedOutKb => Interlocked.Read(ref PgPgOut);

    /// <summary>Faults on file mappings that had to read the file (pgmajfault's file share).</summary>
    public long MajorFaults => Interlocked.Read(ref PgMajFault);

    /// <summary>Pages read ahead of the request, synchronously or not.</summary>
    public long ReadaheadPagesRead => Interlocked.Read(ref ReadaheadPages);

    /// <summary>Writers that had to write back themselves because dirty pages passed the dirty ratio (balance_dirty_pages).</summary>
    public long WritersThrottled => Interlocked.Read(ref DirtyThrottled);

    /// <summary>Writeback I/O errors recorded for a later fsync.</summary>
    public long WriteErrors => Interlocked.Read(ref WritebackErrors);

    /// <summary>Clean pages dropped by <see cref="PageCache.DropCaches"/>, reclaim or the shrinker.</summary>
    public long DroppedPages => Interlocked.Read(ref Dropped);

    /// <summary>Dirty pages reclaim wrote back itself before it dropped them (pageout from shrink_folio_list).</summary>
    public long ReclaimWrittenPages => Interlocked.Read(ref ReclaimWrites);

    /// <summary>
    /// The page cache's /proc/vmstat counters as (name, value) pairs. Major faults are not among them: the MMU counts
    /// every major fault, file ones included, in its own pgmajfault.
    /// </summary>
    public IReadOnlyList<(string Name, long Value)> Items() =>
    [
        ("nr_file_pages", FilePages),
        ("nr_dirty", DirtyPages),
        ("nr_writeback", WritebackPages),
        ("nr_mapped", MappedPages),
        ("pgpgin", PagedInKb),
        ("pgpgout", PagedOutKb),
    ];
}
