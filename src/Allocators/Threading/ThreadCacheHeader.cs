using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Threading;

/// <summary>
/// The start of every per-thread cache block. The owner thread brackets each cache operation with
/// <see cref="TryEnter"/>/<see cref="Exit"/> using plain stores; a drainer on another thread sets
/// <see cref="DrainRequested"/>, issues a process-wide memory barrier (membarrier) and waits for
/// <see cref="Busy"/> to clear, after which it owns the cache until it clears the request again.
/// This is the asymmetric Dekker protocol: the fast path pays no atomic instruction, the rare drain pays the barrier.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct ThreadCacheHeader
{
    /// <summary>1 while the owner is inside a cache operation.</summary>
    public int Busy;

    /// <summary>
    /// <see cref="DrainBit"/> while a drainer wants or holds the cache; <see cref="SampleBit"/> or
    /// <see cref="CountedSampleBit"/> when KFENCE wants the thread's next slab allocation (slab contexts only). The fast paths test the whole word, so either bit sends the
    /// owner to its slow path; only the drain bit keeps it out of the cache.
    /// </summary>
    public int DrainRequested;

    /// <summary>The drain request in <see cref="DrainRequested"/>.</summary>
    public const int DrainBit = 1;

    /// <summary>A KFENCE sample is due (<see cref="DrainRequested"/>): set with an atomic OR, cleared by the owner's slow path.</summary>
    public const int SampleBit = 2;

    /// <summary>
    /// The owner's own count chose its next slab allocation for KFENCE (counted sampling): kept apart from
    /// <see cref="SampleBit"/>, which every system's timer sets in every thread, so a counting system samples only on its
    /// own count. Set by the owner with an atomic OR, cleared by its slow path.
    /// </summary>
    public const int CountedSampleBit = 4;

    /// <summary>Managed thread id of the owner.</summary>
    public int OwnerThreadId;

    /// <summary>Position in the registry's list.</summary>
    public int Index;

    /// <summary>Number of times the cache was drained by someone else.</summary>
    public long RemoteDrains;

    /// <summary>Set once the owner thread has exited and the cache was given back.</summary>
    public int Retired;

    /// <summary>Unique number of this registration, so a stale reference to a reused block is never mistaken for it.</summary>
    public long Token;

    /// <summary>Enters a cache operation; false when a drainer holds the cache (use the shared path then).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe bool TryEnter(ThreadCacheHeader* cache)
    {
        Volatile.Write(ref cache->Busy, 1);
        if ((Volatile.Read(ref cache->DrainRequested) & DrainBit) == 0) return true;
        Volatile.Write(ref cache->Busy, 0);
        return false;
    }

    /// <summary>Leaves a cache operation; everything written before is visible to a drainer after.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Exit(ThreadCacheHeader* cache) => Volatile.Write(ref cache->Busy, 0);
}
