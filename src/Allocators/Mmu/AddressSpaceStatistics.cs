namespace Allocators.Mmu;

/// <summary>The counters of one process address space (/proc/&lt;pid&gt;/stat and status).</summary>
/// <param name="MinorFaults">Faults resolved without I/O (min_flt).</param>
/// <param name="MajorFaults">Faults that had to read a file (maj_flt).</param>
/// <param name="CowFaults">Write faults that copied a shared page.</param>
/// <param name="CowReuses">Write faults that reused an exclusive write-protected page.</param>
/// <param name="RssAnon">Resident anonymous pages (RssAnon / 4 KiB).</param>
/// <param name="RssShmem">Resident shared anonymous pages (RssShmem / 4 KiB).</param>
/// <param name="PageTablePages">Page-table pages, the PGD included (VmPTE / 4 KiB).</param>
/// <param name="VmSizePages">Pages covered by areas (VmSize / 4 KiB).</param>
/// <param name="VmaCount">Number of areas.</param>
/// <param name="RssFile">Resident page-cache pages mapped by file areas (RssFile / 4 KiB).</param>
public readonly record struct AddressSpaceStatistics(long MinorFaults, long MajorFaults, long CowFaults, long CowReuses,
    long RssAnon, long RssShmem, long PageTablePages, long VmSizePages, int VmaCount, long RssFile = 0)
{
    /// <summary>Resident pages (VmRSS / 4 KiB).</summary>
    public long Rss => RssAnon + RssFile + RssShmem;
}
