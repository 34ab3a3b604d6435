using System.Globalization;
using System.Text;
using Allocators.PageAlloc;

namespace Allocators.Mmu;

/// <summary>
/// System-wide MMU event counters (the MMU's share of /proc/vmstat), kept by the <see cref="KernelAddressSpace"/>
/// and updated by every address space that uses it. Thread-safe.
/// </summary>
public sealed class MmuStatistics
{
    private readonly PageAllocator _pages;
    internal long PgFault;
    internal long PgMajFault;
    internal long CowFault;
    internal long CowReuse;
    internal long ZeroPageMap;
    internal long ThpFaultAlloc;
    internal long ThpFaultFallback;
    internal long ThpSplitPmd;
    internal long NrAnonPages;
    internal long NrShmem;
    internal long VmallocSync;
    internal long Oops;
    internal long Segv;
    internal long Sigbus;
    internal long NrFileMapped;
    internal long StackGrowth;

    internal MmuStatistics(PageAllocator pages) => _pages = pages;

    /// <summary>Page faults handled, minor and major (pgfault).</summary>
    public long PageFaults => Interlocked.Read(ref PgFault);

    /// <summary>Faults that had to read a file into the page cache (pgmajfault).</summary>
    public long MajorFaults => Interlocked.Read(ref PgMajFault);

    /// <summary>Write faults that copied a shared anonymous page (wp_page_copy of a real page).</summary>
    public long CowFaults => Interlocked.Read(ref CowFault);

    /// <summary>Write faults that found the page exclusive and reused it (wp_page_reuse).</summary>
    public long CowReuses => Interlocked.Read(ref CowReuse);

    /// <summary>Read faults served by mapping the shared zero page.</summary>
    public long ZeroPageMappings => Interlocked.Read(ref ZeroPageMap);

    /// <summary>Huge pages allocated by faults (thp_fault_alloc).</summary>
    public long ThpFaultAllocations => Interlocked.Read(ref ThpFaultAlloc);

    /// <summary>Huge faults that fell back to 4 KiB pages (thp_fault_fallback).</summary>
    public long ThpFaultFallbacks => Interlocked.Read(ref ThpFaultFallback);

    /// <summary>Huge PMD mappings split into page tables (thp_split_pmd).</summary>
    public long ThpSplits => Interlocked.Read(ref ThpSplitPmd);

    /// <summary>Anonymous pages mapped by all processes, counted once per mapping (nr_anon_pages-like).</summary>
    public long AnonPages => Interlocked.Read(ref NrAnonPages);

    /// <summary>Pages of shared anonymous memory in memory (nr_shmem): each page once, however many map it; pages on swap are not counted.</summary>
    public long ShmemPages => Interlocked.Read(ref NrShmem);

    /// <summary>Process PGD entries copied from the kernel's table on a fault (vmalloc_sync).</summary>
    public long VmallocSyncs => Interlocked.Read(ref VmallocSync);

    /// <summary>Kernel oopses reported.</summary>
    public long Oopses => Interlocked.Read(ref Oops);

    /// <summary>Segmentation faults delivered to processes.</summary>
    public long SegmentationFaults => Interlocked.Read(ref Segv);

    /// <summary>Bus errors delivered to processes (SIGBUS: an access to a file mapping past the end of the file).</summary>
    public long BusErrors => Interlocked.Read(ref Sigbus);

    /// <summary>Page-cache pages mapped by all processes, counted once per mapping (the MMU's view of nr_mapped).</summary>
    public long FileMappedPages => Interlocked.Read(ref NrFileMapped);

    /// <summary>Stack areas grown down by a fault.</summary>
    public long StackExpansions => Interlocked.Read(ref StackGrowth);

    /// <summary>Page-table pages in use, from the page allocator (nr_page_table_pages).</summary>
    public long PageTablePages => _pages.NrPageTablePages;

    /// <summary>The counters as (name, value) pairs in /proc/vmstat naming.</summary>
    public IReadOnlyList<(string Name, long Value)> Items() =>
    [
        ("nr_anon_pages", AnonPages),
        ("nr_shmem", ShmemPages),
        ("nr_mapped", FileMappedPages),
        ("nr_page_table_pages", PageTablePages),
        ("pgfault", PageFaults),
        ("pgmajfault", MajorFaults),
        ("thp_fault_alloc", ThpFaultAllocations),
        ("thp_fault_fallback", ThpFaultFallbacks),
        ("thp_split_pmd", ThpSplits),
        ("cow_fault", CowFaults),
        ("cow_reuse", CowReuses),
        ("zero_page_map", ZeroPageMappings),
        ("vmalloc_sync", VmallocSyncs),
        ("stack_expand", StackExpansions),
        ("segv", SegmentationFaults),
        ("sigbus", BusErrors),
        ("oops", Oopses),
    ];

    /// <summary>The counters as /proc/vmstat prints them (<c>name value</c> lines).</summary>
    public string VmStat()
    {
        var sb = new StringBuilder();
        foreach (var (name, value) in Items()) sb.Append(CultureInfo.InvariantCulture, $"{name} {value}\n");
        return sb.ToString();
    }
}
