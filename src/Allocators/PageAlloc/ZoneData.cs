using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>One buddy free list: free blocks of 2^order pages (the kernel's <c>struct free_area</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FreeArea
{
    public PageFrame* Head;
    public PageFrame* Tail;
    public long Count;
    public long Reported;
}

/// <summary>The free areas of orders 0..<see cref="PageAllocator.MaxOrder"/>.</summary>
[InlineArray(PageAllocator.MaxOrder + 1)]
internal struct FreeAreaArray
{
    private FreeArea _first;
}

/// <summary>A zone's native state (the kernel's <c>struct zone</c>). Fields below the lock change under it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ZoneData
{
    public int Lock;
    public int Id;
    public int Node;
    public ZoneType Type;
    public long FreePages;
    public long WatermarkMin;
    public long WatermarkLow;
    public long WatermarkHigh;
    public long ManagedPages;
    public long PresentPages;
    public long StartPfn;
    public long EndPfn;
    public long ReportedPages;
    public long PagesReportedTotal;
    public long PagesReusedAfterReport;
    public long PageTablePages;          // NR_PAGETABLE: pages of this zone used as page tables (interlocked)
    public fixed long LowmemReserve[ZoneTypeExtensions.Count];  // lowmem_reserve[highest zone of the allocation]: pages kept from it
    public FreeAreaArray FreeAreas;

    public readonly long SpannedPages => EndPfn > StartPfn ? EndPfn - StartPfn : 0;

    public readonly bool Populated => PresentPages > 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FreeArea* Area(ZoneData* zone, int order) => (FreeArea*)&zone->FreeAreas + order;
}
