using System.Runtime.InteropServices;

namespace Allocators.Buffers;

/// <summary>
/// A pool's shared counters, in native memory. Only slow paths touch them (with atomic adds): allocating or evicting
/// a buffer, a rent or return that could not use its thread's cache, a thread cache folded in when its thread exits.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PoolCounters
{
    public long Rents;
    public long Returns;
    public long RentedBytes;
    public long RentedTotal;
    public long Allocations;
    public long AllocatedBytes;
    public long Evictions;
    public long EvictedBytes;
    public long Failures;

    /// <summary>Bytes in the shared stacks now (the budget <see cref="NativeMemoryPoolOptions.MaxPooledBytes"/> applies to).</summary>
    public long DepotBytes;
    public long Reaps;
}
