using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private long _sectionsAdded;
    private long _sectionsRemoved;

    /// <summary>Sections hot-added since start (explicitly or by growth).</summary>
    public long SectionsAdded => Interlocked.Read(ref _sectionsAdded);

    /// <summary>Sections taken offline since start.</summary>
    public long SectionsRemoved => Interlocked.Read(ref _sectionsRemoved);

    /// <summary>The zone hot-added sections join: HighMem with the low/high split (they lie above boot memory), else Normal.</summary>
    private ZoneType HotAddedZone => HasHighMem ? ZoneType.HighMem : ZoneType.Normal;

    /// <summary>
    /// Hot-adds one section of memory (sparse model) to the Normal zone of <paramref name="node"/> (HighMem with the
    /// low/high split)
    /// (-1: the node with the least memory). Returns the section index, or -1 when the arena is at its maximum.
    /// </summary>
    public int AddMemory(int node = -1)
    {
        lock (_hotplugLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_memory.Model != MemoryModel.Sparse)
                throw new InvalidOperationException("AddMemory needs MemoryModel.Sparse.");
            if (node >= _nodeCount) throw new ArgumentOutOfRangeException(nameof(node), node, $"There are {_nodeCount} nodes.");
            int index = -1;
            for (int s = 0; s < _memory.MaxSections; s++)
            {
                if (!_memory.IsSectionOnline(s)) { index = s; break; }
            }
            if (index < 0) return -1;
            if (node < 0) node = SmallestNode();
            _memory.OnlineSection(index, node);
            // Before any page of it can be allocated: whoever maps memory (the kernel's direct map) maps it now.
            NotifyMemory(_memory.SectionStartPfn(index), _memory.PagesPerSection, online: true);
            int zoneId = node * ZonesPerNode + (int)HotAddedZone;
            OnlineSectionPages(index, _ => zoneId);
            ShuffleFreeMemory();
            RebuildZonelists();
            SetupWatermarks();
            Interlocked.Increment(ref _sectionsAdded);
            return index;
        }
    }

    /// <summary>
    /// Takes a fully free section offline and gives its memory back to the host. Throws (changing nothing) when a
    /// page of the section is in use.
    /// </summary>
    public void RemoveMemory(int section)
    {
        lock (_hotplugLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_memory.IsSectionOnline(section))
                throw new ArgumentException($"Section {section} is not online.", nameof(section));
            DrainAllPages();
            ulong start = _memory.SectionStartPfn(section);
            long pages = _memory.PagesPerSection;
            PageFrame* frames = _memory.PfnToPage(start);

            for (int z = 0; z < _zoneCount; z++) NativeSpinLock.Acquire(&_zones[z].Lock);
            try
            {
                for (long i = 0; i < pages;)
                {
                    PageFrame* page = frames + i;
                    if (!page->Has(PageFlags.Buddy))
                        throw new InvalidOperationException(
                            $"Section {section} cannot go offline: pfn 0x{page->Pfn:x} is in use ({page->Describe()}).");
                    i += 1L << page->Order;
                }
                for (long i = 0; i < pages;)
                {
                    PageFrame* page = frames + i;
                    int order = page->Order;
                    ZoneData* zone = _zones + page->ZoneId;
                    DelFromFreeArea(zone, page, order);
                    zone->PresentPages -= 1L << order;
                    zone->ManagedPages -= 1L << order;
                    i += 1L << order;
                }
            }
            finally
            {
                for (int z = _zoneCount - 1; z >= 0; z--) NativeSpinLock.Release(&_zones[z].Lock);
            }
            for (long i = 0; i < pages; i++) frames[i].FlagsAndZone = (0xFFUL << PageFrame.ZoneShift) | (uint)PageFlags.Offline;
            NotifyMemory(start, pages, online: false); // mappings of it go before its host memory does
            _memory.OfflineSection(section);
            RecomputeZoneSpans();
            RebuildZonelists();
            SetupWatermarks();
            Interlocked.Increment(ref _sectionsRemoved);
        }
    }

    private Action<ulong, long, bool>[] _memoryNotifiers = [];

    /// <summary>
    /// register_memory_notifier: <paramref name="notifier"/>(start pfn, pages, online) runs when a section comes
    /// online (before any of its pages can be allocated) and when it goes offline (before its host memory is
    /// released). It runs under the hotplug lock, possibly from an allocation that grows the arena, so it must neither
    /// allocate nor take a lock that is held while allocating. A registered callback: the layers above (the kernel's
    /// direct map) are reached only through it.
    /// </summary>
    internal void RegisterMemoryNotifier(Action<ulong, long, bool> notifier)
    {
        lock (_hotplugLock) _memoryNotifiers = [.. _memoryNotifiers, notifier];
    }

    /// <summary>Removes a notifier added with <see cref="RegisterMemoryNotifier"/>.</summary>
    internal void UnregisterMemoryNotifier(Action<ulong, long, bool> notifier)
    {
        lock (_hotplugLock) _memoryNotifiers = Array.FindAll(_memoryNotifiers, n => n != notifier);
    }

    private void NotifyMemory(ulong startPfn, long pages, bool online)
    {
        foreach (var notifier in _memoryNotifiers) notifier(startPfn, pages, online);
    }

    /// <summary>Grows the arena by one section when the sparse model allows it (called when an allocation would fail).</summary>
    private bool TryGrow(int node)
    {
        if (_memory.Model != MemoryModel.Sparse) return false;
        try
        {
            return AddMemory(node) >= 0;
        }
        catch (OutOfMemoryException)
        {
            return false;
        }
    }

    private int SmallestNode()
    {
        int best = 0;
        long bestPages = long.MaxValue;
        for (int n = 0; n < _nodeCount; n++)
        {
            long present = 0;
            for (int t = 0; t < ZonesPerNode; t++) present += _zones[n * ZonesPerNode + t].PresentPages;
            if (present < bestPages) { bestPages = present; best = n; }
        }
        return best;
    }

    private void OnlineSectionPages(int section, ZoneLayout layout) => OnlineSectionPages(section, layout.ZoneOf);

    /// <summary>
    /// Assigns every page of an online section to its zone and frees it in max-order blocks, marked reported (never
    /// touched). Only each block's head frame is written: the others are zero until the block first leaves its free
    /// list (<see cref="InitDeferredTails"/>), so the frames of memory nobody uses are never resident.
    /// </summary>
    private void OnlineSectionPages(int section, Func<long, int> zoneOf)
    {
        ulong start = _memory.SectionStartPfn(section);
        long pages = _memory.PagesPerSection;
        PageFrame* frames = _memory.PfnToPage(start);
        for (long block = 0; block < pages; block += MaxOrderPages)
        {
            int zoneId = zoneOf((long)start + block);
            ZoneData* zone = _zones + zoneId;
            PageFrame* head = frames + block;
            head->_pfn = (uint)(start + (ulong)block);
            head->FlagsAndZone = (ulong)zoneId << PageFrame.ZoneShift;
            if (_initOnFree) InitOnlineBlock(head);
            NativeSpinLock.Acquire(&zone->Lock);
            long pfn = (long)start + block;
            zone->StartPfn = Math.Min(zone->StartPfn, pfn);
            zone->EndPfn = Math.Max(zone->EndPfn, pfn + MaxOrderPages);
            zone->PresentPages += MaxOrderPages;
            zone->ManagedPages += MaxOrderPages;
            AddToFreeArea(zone, head, MaxOrder, reported: true, atTail: true);
            head->FlagsAndZone |= (uint)PageFlags.DeferredInit;
            NativeSpinLock.Release(&zone->Lock);
        }
    }

    private void RecomputeZoneSpans()
    {
        var start = new long[_zoneCount];
        var end = new long[_zoneCount];
        Array.Fill(start, long.MaxValue);
        for (int s = 0; s < _memory.MaxSections; s++)
        {
            if (!_memory.IsSectionOnline(s)) continue;
            ulong first = _memory.SectionStartPfn(s);
            PageFrame* frames = _memory.PfnToPage(first);
            for (long block = 0; block < _memory.PagesPerSection; block += MaxOrderPages)
            {
                int z = frames[block].ZoneId;
                long pfn = (long)first + block;
                start[z] = Math.Min(start[z], pfn);
                end[z] = Math.Max(end[z], pfn + MaxOrderPages);
            }
        }
        for (int z = 0; z < _zoneCount; z++)
        {
            NativeSpinLock.Acquire(&_zones[z].Lock);
            _zones[z].StartPfn = start[z];
            _zones[z].EndPfn = start[z] == long.MaxValue ? 0 : end[z];
            NativeSpinLock.Release(&_zones[z].Lock);
        }
    }

    /// <summary>
    /// Builds the zonelists (node order): for each node and highest zone, the node's own populated zones from the
    /// highest allowed down, then the other nodes' in order of distance (next node first).
    /// </summary>
    private void RebuildZonelists()
    {
        var lists = new int[_nodeCount * ZonesPerNode][];
        var local = new int[_nodeCount * ZonesPerNode];
        for (int node = 0; node < _nodeCount; node++)
        {
            for (int highest = 0; highest < ZonesPerNode; highest++)
            {
                var list = new List<int>();
                for (int d = 0; d < _nodeCount; d++)
                {
                    int n = (node + d) % _nodeCount;
                    for (int t = highest; t >= 0; t--)
                    {
                        int id = n * ZonesPerNode + t;
                        if (_zones[id].PresentPages > 0) list.Add(id);
                    }
                    if (d == 0) local[node * ZonesPerNode + highest] = list.Count;
                }
                lists[node * ZonesPerNode + highest] = list.ToArray();
            }
        }
        Volatile.Write(ref _zonelists, new ZonelistSet(lists, local));
        for (int node = 0; node < _nodeCount; node++)
        {
            for (int mod = 0; mod < ZoneModifiers; mod++)
            {
                int highest = (int)((Gfp)mod).HighestZone();
                int[] list = lists[node * ZonesPerNode + highest];
                // With KASAN's page guards no allocation is served from a per-thread list: every one reaches the slow path.
                _preferredZone[node * ZoneModifiers + mod] = list.Length > 0 && !_pageGuards ? list[0] : -1;
            }
        }
    }
}
