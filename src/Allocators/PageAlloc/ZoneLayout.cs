using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>Where nodes and zones start in pfn space at boot: node 0 holds DMA, DMA32 and Normal, other nodes Normal.</summary>
internal sealed class ZoneLayout
{
    private const long BlockPages = PhysicalMemoryOptions.BlockBytes >> PageFrame.PageShift;
    private readonly long[] _nodeStart;
    private readonly long _dmaEnd;
    private readonly long _dma32End;
    private readonly long _highStart;

    public ZoneLayout(PhysicalMemoryOptions options, long pagesPerSection)
    {
        long pages = options.Size >> PageFrame.PageShift;
        int nodes = options.Nodes;
        _nodeStart = new long[nodes + 1];
        for (int n = 0; n <= nodes; n++) _nodeStart[n] = pages * n / nodes / BlockPages * BlockPages;
        if (nodes > 1 && options.Model == MemoryModel.Sparse && pages / pagesPerSection >= nodes)
        {
            long sections = pages / pagesPerSection;
            for (int n = 0; n <= nodes; n++) _nodeStart[n] = sections * n / nodes * pagesPerSection;
        }
        for (int n = 0; n < nodes; n++)
        {
            if (_nodeStart[n + 1] <= _nodeStart[n])
                throw new ArgumentException($"Size {options.Size} is too small for {nodes} nodes (each needs at least 4 MiB).");
        }

        long node0 = _nodeStart[1] << PageFrame.PageShift;
        long dma = options.DmaZoneSize ?? (node0 >= 32L << 20 ? Math.Clamp(node0 / 64 / PhysicalMemoryOptions.BlockBytes * PhysicalMemoryOptions.BlockBytes, PhysicalMemoryOptions.BlockBytes, 16L << 20) : 0);
        long dma32 = options.Dma32ZoneSize ?? (node0 >= 32L << 20 ? node0 / 4 / PhysicalMemoryOptions.BlockBytes * PhysicalMemoryOptions.BlockBytes : 0);
        if (dma + dma32 > node0)
            throw new ArgumentException($"DMA ({dma}) and DMA32 ({dma32}) zones do not fit in node 0 ({node0} bytes).");
        _dmaEnd = dma >> PageFrame.PageShift;
        _dma32End = _dmaEnd + (dma32 >> PageFrame.PageShift);
        _highStart = options.LowMemoryLimit switch
        {
            PhysicalMemoryOptions.AllMemoryLow => long.MaxValue,
            { } limit => limit >> PageFrame.PageShift,
            null => DefaultHighStart(options, pages),
        };
        if (_highStart < _dma32End)
            throw new ArgumentException($"LowMemoryLimit ({options.LowMemoryLimit}) must not fall inside the DMA/DMA32 zones (which end at {_dma32End << PageFrame.PageShift}).", nameof(options.LowMemoryLimit));
    }

    /// <summary>True when the arena has a low/high split: HighMem zones exist and hot-added memory is high.</summary>
    public bool HasHighMem => _highStart != long.MaxValue;

    /// <summary>The first high pfn (high_memory's frame), or long.MaxValue without the split.</summary>
    public long HighStartPfn => _highStart;

    /// <summary>
    /// The split the default high-memory size gives boot memory: at most that much high memory in whole 4 MiB blocks,
    /// the split raised to the end of DMA32 (and to one block: the kernel needs low memory); none when nothing would
    /// be left high.
    /// </summary>
    private long DefaultHighStart(PhysicalMemoryOptions options, long pages)
    {
        long high = options.DefaultHighMemoryBytes >> PageFrame.PageShift;
        if (high <= 0) return long.MaxValue;
        long low = Math.Max(Math.Max((pages - high + BlockPages - 1) / BlockPages * BlockPages, _dma32End), BlockPages);
        return low < pages ? low : long.MaxValue;
    }

    /// <summary>
    /// The zone id (node * <see cref="PageAllocator.ZonesPerNode"/> + type) of a boot-time pfn; pfns beyond boot memory
    /// belong to the last node's Normal zone; pfns at or above the low-memory limit to their node's HighMem zone.
    /// </summary>
    public int ZoneOf(long pfn)
    {
        int node = _nodeStart.Length - 2;
        for (int n = 0; n < _nodeStart.Length - 1; n++)
        {
            if (pfn < _nodeStart[n + 1]) { node = n; break; }
        }
        ZoneType type = pfn >= _highStart ? ZoneType.HighMem
            : node != 0 ? ZoneType.Normal : pfn < _dmaEnd ? ZoneType.Dma : pfn < _dma32End ? ZoneType.Dma32 : ZoneType.Normal;
        return node * PageAllocator.ZonesPerNode + (int)type;
    }
}
