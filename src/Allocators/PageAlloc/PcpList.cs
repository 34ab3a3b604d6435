using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>One per-thread page list of one zone and order (the kernel's per_cpu_pages list). Newest at the head.</summary>
[StructLayout(LayoutKind.Sequential, Size = 32)]
internal unsafe struct PcpList
{
    public PageFrame* Head;
    public PageFrame* Tail;
    public int Count;

    public void PushHead(PageFrame* page)
    {
        page->Prev = null;
        page->Next = Head;
        if (Head != null) Head->Prev = page; else Tail = page;
        Head = page;
        Count++;
    }

    public PageFrame* PopHead()
    {
        PageFrame* page = Head;
        Head = page->Next;
        if (Head != null) Head->Prev = null; else Tail = null;
        Count--;
        page->Next = null;
        return page;
    }

    public PageFrame* PopTail()
    {
        PageFrame* page = Tail;
        Tail = page->Prev;
        if (Tail != null) Tail->Next = null; else Head = null;
        Count--;
        page->Prev = null;
        return page;
    }
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
    public long NumaLocal;
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
