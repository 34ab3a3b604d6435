using Allocators.Threading;

namespace Allocators.Buffers;

// Statistics are never counted on a shared line by the fast path: each thread adds to its own cache block, the slow
// paths and retired threads add atomically to the pool's counters, and a read sums them all under the thread-cache
// registry's lock (so a cache being retired is counted once, either in its block or in the counters).
public sealed unsafe partial class NativeMemoryPool
{
    /// <summary>The pool's counters, summed over every thread now.</summary>
    public MemoryPoolStatistics Statistics()
    {
        long rents = 0, returns = 0, rentedBytes = 0, rentedTotal = 0, cachedBytes = 0;
        int classes = PoolSizeClasses.Count;
        int[] lengths = _lengths;
        _caches.ForEach(block =>
        {
            var cache = (ThreadCacheHeader*)block;
            PoolThreadStats* stats = PoolThreadCache.Stats(cache);
            rents += Volatile.Read(ref stats->Rents);
            returns += Volatile.Read(ref stats->Returns);
            rentedBytes += Volatile.Read(ref stats->RentedBytes);
            rentedTotal += Volatile.Read(ref stats->RentedTotal);
            for (int c = 0; c < classes; c++)
                cachedBytes += (long)Volatile.Read(ref PoolThreadCache.Magazine(cache, c)->Count) * lengths[c];
        }, () =>
        {
            rents += Volatile.Read(ref _counters->Rents);
            returns += Volatile.Read(ref _counters->Returns);
            rentedBytes += Volatile.Read(ref _counters->RentedBytes);
            rentedTotal += Volatile.Read(ref _counters->RentedTotal);
        });
        return new MemoryPoolStatistics(
            TotalRents: rents,
            TotalReturns: returns,
            RentedBytes: rentedBytes,
            TotalRentedBytes: rentedTotal,
            PooledBytes: cachedBytes + Volatile.Read(ref _counters->DepotBytes),
            AllocatedBytes: Volatile.Read(ref _counters->AllocatedBytes),
            TotalAllocations: Volatile.Read(ref _counters->Allocations),
            TotalEvictions: Volatile.Read(ref _counters->Evictions),
            TotalEvictedBytes: Volatile.Read(ref _counters->EvictedBytes),
            Failures: Volatile.Read(ref _counters->Failures),
            Reaps: Volatile.Read(ref _counters->Reaps));
    }

    /// <summary>Bytes rented out now.</summary>
    public long RentedBytes => Statistics().RentedBytes;

    /// <summary>Buffers rented out now.</summary>
    public long RentedBuffers => Statistics().RentedBuffers;

    /// <summary>Bytes of returned buffers kept for reuse (threads' caches and the shared stacks).</summary>
    public long PooledBytes => Statistics().PooledBytes;

    /// <summary>Rents that found no memory.</summary>
    public long Failures => Volatile.Read(ref _counters->Failures);
}

/// <summary>A <see cref="NativeMemoryPool"/>'s counters at one moment (<see cref="NativeMemoryPool.Statistics"/>).</summary>
/// <param name="TotalRents">Rents so far.</param>
/// <param name="TotalReturns">Returns so far.</param>
/// <param name="RentedBytes">Bytes rented out now (the kernel's active objects).</param>
/// <param name="TotalRentedBytes">Bytes rented so far (Kestrel's <c>aspnetcore.memory_pool.rented</c>).</param>
/// <param name="PooledBytes">Bytes kept for reuse now (<c>aspnetcore.memory_pool.pooled</c>).</param>
/// <param name="AllocatedBytes">Bytes of buffers the pool owns now, rented or pooled.</param>
/// <param name="TotalAllocations">Buffers allocated so far.</param>
/// <param name="TotalEvictions">Buffers evicted (freed) so far.</param>
/// <param name="TotalEvictedBytes">Bytes evicted so far (<c>aspnetcore.memory_pool.evicted</c>).</param>
/// <param name="Failures">Rents that found no memory.</param>
/// <param name="Reaps">Reaper periods run.</param>
public readonly record struct MemoryPoolStatistics(
    long TotalRents, long TotalReturns, long RentedBytes, long TotalRentedBytes, long PooledBytes, long AllocatedBytes,
    long TotalAllocations, long TotalEvictions, long TotalEvictedBytes, long Failures, long Reaps)
{
    /// <summary>Buffers rented out now.</summary>
    public long RentedBuffers => TotalRents - TotalReturns;

    /// <summary>Bytes allocated so far (<c>aspnetcore.memory_pool.allocated</c>).</summary>
    public long TotalAllocatedBytes => AllocatedBytes + TotalEvictedBytes;
}
