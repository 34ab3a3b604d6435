using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>
/// One per-thread page list of one zone and order (the kernel's per_cpu_pages list), newest at the head. Stored as a
/// ring of frame pointers inside the thread's cache block rather than linked through the frames, so pushing and
/// popping touch only the thread's own block: no other page's frame is written.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 32)]
internal unsafe struct PcpList
{
    public int Head;          // next slot to push (newest end), counts up
    public int Tail;          // oldest entry, counts up
    public int Mask;          // capacity - 1 (a power of two)
    public int SlotsOffset;   // from this struct to its slot array
    public int High;          // pcp->high of this order: more pages than this and a batch goes back to the zone
    public int Batch;         // pcp->batch of this order

    public readonly int Count => Head - Tail;

    private PageFrame** Slots
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (PageFrame**)((byte*)Unsafe.AsPointer(ref this) + SlotsOffset);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushHead(PageFrame* page)
    {
        Slots[Head & Mask] = page;
        Head++;
    }

    /// <summary>The newest page; the list must not be empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* PopHead() => Slots[--Head & Mask];

    /// <summary>The oldest page; the list must not be empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* PopTail() => Slots[Tail++ & Mask];
}

/// <summary>Per-thread, per-zone event counters, summed on read (vmstat and numastat items).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ZoneEventCounters
{
    public const int Count = 8;
    public long PgAlloc;
    public long PgFree;
    public long NumaHit;
    public long NumaMiss;
    public long NumaForeign;
    public long NumaLocal;        // not counted: derived as hit + miss - other when read
    public long NumaOther;
    public long Reserved;
}

/// <summary>Index of each counter in <see cref="ZoneEventCounters"/>.</summary>
internal enum ZoneEvent
{
    PgAlloc, PgFree, NumaHit, NumaMiss, NumaForeign, NumaLocal, NumaOther,
}

/// <summary>Allocation flags derived from GFP flags (the kernel's ALLOC_*).</summary>
[Flags]
internal enum AllocFlags
{
    WmarkMin = 0,
    WmarkLow = 1,
    NoWatermarks = 2,
    MinReserve = 4,
    NonBlock = 8,
}
