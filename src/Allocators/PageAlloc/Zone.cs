namespace Allocators.PageAlloc;

/// <summary>A read-only view of one zone of a node: its size, watermarks and free lists.</summary>
public sealed unsafe class Zone
{
    private readonly ZoneData* _data;

    internal Zone(ZoneData* data) => _data = data;

    internal ZoneData* Data => _data;

    /// <summary>Global zone index (node * ZoneTypeExtensions.Count + type).</summary>
    public int Id => _data->Id;

    /// <summary>The node that owns the zone.</summary>
    public int Node => _data->Node;

    /// <summary>The zone type.</summary>
    public ZoneType Type => _data->Type;

    /// <summary>The kernel's name for the zone (DMA, DMA32, Normal).</summary>
    public string Name => Type.KernelName();

    /// <summary>Free pages in the buddy lists (NR_FREE_PAGES); pages on per-thread lists are not counted.</summary>
    public long FreePages => Volatile.Read(ref _data->FreePages);

    /// <summary>The min watermark in pages.</summary>
    public long WatermarkMin => _data->WatermarkMin;

    /// <summary>The low watermark in pages.</summary>
    public long WatermarkLow => _data->WatermarkLow;

    /// <summary>The high watermark in pages.</summary>
    public long WatermarkHigh => _data->WatermarkHigh;

    /// <summary>
    /// lowmem_reserve: pages this zone keeps from an allocation whose highest zone is <paramref name="highestZone"/>
    /// (zoneinfo's protection), 0 for this zone's own type and those below.
    /// </summary>
    public long LowmemReserve(ZoneType highestZone) => _data->LowmemReserve[(int)highestZone];

    /// <summary>Pages the allocator manages.</summary>
    public long ManagedPages => _data->ManagedPages;

    /// <summary>Pages that exist in the zone.</summary>
    public long PresentPages => _data->PresentPages;

    /// <summary>Pages the zone's pfn range spans, holes included.</summary>
    public long SpannedPages => _data->SpannedPages;

    /// <summary>First pfn of the zone's span.</summary>
    public long StartPfn => _data->StartPfn;

    /// <summary>Free pages whose memory is currently given back to the host.</summary>
    public long ReportedPages => Volatile.Read(ref _data->ReportedPages);

    /// <summary>Number of free blocks of 2^<paramref name="order"/> pages.</summary>
    public long FreeBlocks(int order) => Volatile.Read(ref ZoneData.Area(_data, order)->Count);

    /// <summary>For tests: the first free block of <paramref name="order"/>, or null.</summary>
    internal Physical.PageFrame* FreeListHeadForTesting(int order) => ZoneData.Area(_data, order)->Head;

    /// <summary>True when the zone holds memory.</summary>
    public bool Populated => _data->Populated;

    /// <inheritdoc/>
    public override string ToString() => $"Node {Node}, zone {Name}";
}
