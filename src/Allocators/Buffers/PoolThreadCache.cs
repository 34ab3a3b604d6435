using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Buffers;

/// <summary>
/// One thread's counters for one pool, written only by that thread (plain adds, no atomics) and summed on read.
/// A rent counts +length and a return -length in <see cref="RentedBytes"/>, so a buffer rented on one thread and
/// returned on another leaves one positive and one negative entry that cancel in the sum.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct PoolThreadStats
{
    public long Rents;
    public long Returns;
    public long RentedBytes;

    /// <summary>Bytes rented in all (only ever grows: Kestrel's <c>rented</c> counter).</summary>
    public long RentedTotal;

    /// <summary>Rents + returns when the reaper last looked (written by the reaper only, under the registry lock).</summary>
    public long OpsAtLastReap;

    /// <summary>Whether the thread neither rented nor returned through the reaper's last period (reaper only).</summary>
    public bool QuietAtLastReap;
}

/// <summary>A thread's stack of idle buffers of one size class: ids into the pool's owner table.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct PoolMagazine
{
    public int Count;
    public int Capacity;
    public int SlotsOffset; // from this struct to its slots

    /// <summary>Length of the class's buffers, here so that the fast path reads no shared line.</summary>
    public int Length;

    /// <summary>
    /// The fewest buffers the magazine held since the reaper last looked (tcache's low-water mark): that many sat
    /// unused through the whole period, and the reaper sends half of them to the depot.
    /// </summary>
    public int LowWater;

    public int* Slots
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (int*)((byte*)Unsafe.AsPointer(ref this) + SlotsOffset);
    }
}

/// <summary>
/// Layout of a pool's per-thread cache block (owned by a <see cref="ThreadCacheRegistry"/>): the header, the thread's
/// counters, one magazine per size class, then the magazines' slots.
/// </summary>
internal static unsafe class PoolThreadCache
{
    private static readonly int StatsOffset = sizeof(ThreadCacheHeader);
    private static readonly int MagazinesOffset = StatsOffset + sizeof(PoolThreadStats);

    /// <summary>Bytes of a block whose magazines have <paramref name="capacities"/> slots.</summary>
    public static int BlockSize(ReadOnlySpan<int> capacities)
    {
        int slots = 0;
        foreach (int c in capacities) slots += c;
        return MagazinesOffset + capacities.Length * sizeof(PoolMagazine) + slots * sizeof(int);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PoolThreadStats* Stats(ThreadCacheHeader* cache) => (PoolThreadStats*)((byte*)cache + sizeof(ThreadCacheHeader));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PoolMagazine* Magazine(ThreadCacheHeader* cache, int sizeClass)
        => (PoolMagazine*)((byte*)cache + sizeof(ThreadCacheHeader) + sizeof(PoolThreadStats)) + sizeClass;

    /// <summary>Lays out the magazines of a fresh (zeroed) block.</summary>
    public static void Init(ThreadCacheHeader* cache, ReadOnlySpan<int> capacities, ReadOnlySpan<int> lengths)
    {
        byte* slots = (byte*)Magazine(cache, capacities.Length);
        for (int c = 0; c < capacities.Length; c++)
        {
            PoolMagazine* m = Magazine(cache, c);
            m->Capacity = capacities[c];
            m->Length = lengths[c];
            m->SlotsOffset = (int)(slots - (byte*)m);
            slots += capacities[c] * sizeof(int);
        }
    }
}
