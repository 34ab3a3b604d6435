namespace Allocators.Mmu;

/// <summary>Software TLB counters of one address space.</summary>
/// <param name="Hits">Translations found in a TLB.</param>
/// <param name="Misses">Translations that needed a page walk.</param>
/// <param name="PageFlushes">Flushes of one page (flush_tlb_page), by the API or by the MMU itself (e.g. copy-on-write).</param>
/// <param name="RangeFlushes">Flushes of a range (flush_tlb_range), e.g. by munmap and mprotect.</param>
/// <param name="FullFlushes">Flushes of everything (flush_tlb_mm), e.g. by fork.</param>
/// <param name="Shootdowns">Flushes that had to wait for other threads (the IPI of a real shootdown).</param>
/// <param name="LocalInvalidations">Entries or whole TLBs dropped on the threads (invlpg and full local flushes).</param>
/// <param name="Threads">Threads that currently have a TLB for the address space.</param>
public readonly record struct TlbStatistics(long Hits, long Misses, long PageFlushes, long RangeFlushes, long FullFlushes,
    long Shootdowns, long LocalInvalidations, int Threads);
