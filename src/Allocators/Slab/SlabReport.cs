namespace Allocators.Slab;

/// <summary>One problem found in a slab cache, with the kernel-style report text.</summary>
/// <param name="Cache">Name of the cache.</param>
/// <param name="Problem">The one-line title, e.g. "Right Redzone overwritten".</param>
/// <param name="Address">The object (or slab) address involved.</param>
/// <param name="Text">The full multi-line report (BUG / INFO / FIX lines).</param>
public sealed record SlabReport(string Cache, string Problem, nuint Address, string Text)
{
    /// <summary>The report's first line: <c>BUG &lt;cache&gt;: &lt;problem&gt;</c>.</summary>
    public string Title => $"BUG {Cache}: {Problem}";

    /// <inheritdoc/>
    public override string ToString() => Text;
}

/// <summary>
/// Counters of one cache, like /sys/kernel/slab/&lt;cache&gt;/ statistics. <see cref="AllocFastPath"/> and
/// <see cref="FreeFastPath"/> count only where <see cref="SlabStatistics.CountsFastPaths"/> (as the kernel's only exist
/// with CONFIG_SLUB_STATS); the rest always count. <see cref="CpuCacheRefill"/>: a thread took another slab to allocate
/// from; <see cref="CpuCacheFlush"/>: a thread's slabs went back to the nodes (drain); <see cref="RemoteFrees"/>: frees onto
/// a slab another thread (or none) owns; <see cref="SlabClaims"/>: frees that took over a slab with no owner.
/// </summary>
public readonly record struct KmemCacheStats(
    long AllocFastPath, long AllocSlowPath, long FreeFastPath, long FreeSlowPath,
    long CpuCacheRefill, long CpuCacheFlush, long RemoteFrees, long SlabClaims,
    long SlabsAllocated, long SlabsFreed, long AllocFailures, long CorruptionsFound,
    long ActiveObjects, long TotalObjects, long Slabs, long PartialSlabs);
