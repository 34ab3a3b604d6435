using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;
using Allocators.Rcu;
using Allocators.Threading;

namespace Allocators.PageAlloc;

/// <summary>
/// The buddy page allocator over a <see cref="PhysicalMemory"/> arena: nodes, zones, free_area[0..10], watermarks,
/// per-thread page lists for orders 0..3 in front of the zones, memory hotplug and statistics in the kernel's formats.
/// </summary>
/// <remarks>
/// Thread-safe. The fast path (orders 0..3) serves from the calling thread's page lists without any lock or atomic
/// instruction; zone locks are taken only to refill or flush a batch and on the slow path.
/// Allocation failure returns null (never with <see cref="Gfp.NoFail"/>); misuse throws a
/// <see cref="Common.MemoryCorruptionException"/> (bad frees) or an <see cref="ArgumentException"/> (bad requests)
/// and changes nothing.
/// <para>Locks: a zone's free areas, free-page count and watermarks change only under its <c>ZoneData.Lock</c>
/// (innermost in the suite's order, docs/locking.md); per-thread lists belong to their thread.</para>
/// <para>Invariants, per zone (<c>CheckConsistency</c> checks them; the tests run it):
/// <c>FreePages = Σ_{o=0..MaxOrder} 2^o · free_area[o].Count</c>;
/// <c>ReportedPages = Σ_o 2^o · free_area[o].Reported</c>;
/// a block on <c>free_area[o]</c> has PG_buddy, order o and <c>pfn mod 2^o = 0</c>, and its buddy is not a free block
/// of order o (it would have merged); frames marked PG_buddy = <c>Σ_o free_area[o].Count</c>. Deferred struct page
/// init: only a max-order block's head frame is written when memory comes online; a head with
/// <see cref="PageFlags.DeferredInit"/> is a free max-order block whose other frames are zero, and the flag goes (the
/// frames written) before the block leaves its free list, so every frame outside such a block holds its pfn and
/// zone.</para>
/// </remarks>
public sealed unsafe partial class PageAllocator : IDisposable, IThreadCacheOwner
{
    /// <summary>Largest order (MAX_PAGE_ORDER): 2^10 pages = 4 MiB.</summary>
    public const int MaxOrder = 10;

    /// <summary>Orders served by the per-thread page lists (0..PAGE_ALLOC_COSTLY_ORDER).</summary>
    public const int PcpMaxOrder = 3;

    internal const int PcpOrders = PcpMaxOrder + 1;
    internal const int ZonesPerNode = ZoneTypeExtensions.Count;

    /// <summary>True when the arena has a low/high split (<see cref="PhysicalMemoryOptions.LowMemoryLimit"/>): HighMem zones exist.</summary>
    public bool HasHighMem => _highStartPfn != long.MaxValue;

    /// <summary>page_zonenum: the type of the zone <paramref name="page"/> belongs to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ZoneType ZoneTypeOf(PageFrame* page) => (ZoneType)(page->ZoneId % ZonesPerNode);

    private readonly long _highStartPfn;

    /// <summary>
    /// The first frame of high memory (the end of the kernel's direct map), or long.MaxValue without the split: from
    /// <see cref="PhysicalMemoryOptions.LowMemoryLimit"/> or, when that is null, <see cref="PhysicalMemoryOptions.HighMemoryEnvironmentVariable"/>.
    /// </summary>
    internal long HighStartPfn => _highStartPfn;

    private readonly PhysicalMemory _memory;
    private readonly PageAllocatorOptions _options;
    private readonly ZoneData* _zones;
    private readonly int _zoneCount;
    private readonly int _nodeCount;
    private readonly Zone[] _zoneViews;
    private readonly int[] _cpuToNode;
    private readonly int* _preferredZone;        // [node * ZoneModifiers + (gfp & ZoneModifierMask)] -> first zone of the zonelist

    /// <summary>The gfp zone modifiers (__GFP_DMA, __GFP_DMA32, __GFP_HIGHMEM: GFP_ZONEMASK's bits here).</summary>
    private const Gfp ZoneModifierMask = Gfp.Dma | Gfp.Dma32 | Gfp.HighMem;
    private const int ZoneModifiers = (int)ZoneModifierMask + 1;
    private ZonelistSet _zonelists;              // replaced whole on hotplug; readers take one snapshot
    private readonly ThreadCacheRegistry _pcp;
    private readonly int _pcpListsOffset;
    private readonly int _pcpCountersOffset;
    private readonly int _pcpSlotsOffset;
    private readonly int* _pcpCapacity;          // ring slots per list, by order
    private readonly int* _pcpHigh;
    private readonly int* _pcpBatch;
    private readonly Lock _hotplugLock = new();
    private readonly object _freeSignal = new();
    private int _noFailWaiters;
    private readonly long _stallTicks;           // StallWarningInterval in Stopwatch ticks
    private bool _disposed;

    /// <summary>Builds the allocator and hands it every page of the arena's online sections.</summary>
    public PageAllocator(PhysicalMemory memory, PageAllocatorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        _options = options ?? new PageAllocatorOptions();
        _options.Validate();
        _stallTicks = (long)Math.Min(_options.StallWarningInterval.TotalSeconds * Stopwatch.Frequency, long.MaxValue / 2);
        FaultInjection = new FaultAttributes();
        _kasan = memory.Kasan;
        _pageGuards = _kasan != null && memory.Checks.KasanPageGuards;
        _kasan?.AddDescriber(KasanDescribePage);
        if (_kasan != null) _kasan.Quarantine.ReleasePages = KasanReleasePages;

        var physical = memory.Options;
        // Everything that can reject the configuration runs before any native memory or registry slot is taken.
        _cpuToNode = BuildCpuToNode(physical);
        var layout = new ZoneLayout(physical, memory.PagesPerSection);
        _highStartPfn = layout.HighStartPfn;
        _nodeCount = physical.Nodes;
        _zoneCount = _nodeCount * ZonesPerNode;
        _zones = (ZoneData*)NativeMemory.AlignedAlloc((nuint)(_zoneCount * sizeof(ZoneData)), 64);
        NativeMemory.Clear(_zones, (nuint)(_zoneCount * sizeof(ZoneData)));
        _zoneViews = new Zone[_zoneCount];
        for (int i = 0; i < _zoneCount; i++)
        {
            _zones[i].Id = i;
            _zones[i].Node = i / ZonesPerNode;
            _zones[i].Type = (ZoneType)(i % ZonesPerNode);
            _zones[i].StartPfn = long.MaxValue;
            _zoneViews[i] = new Zone(_zones + i);
        }

        _preferredZone = (int*)NativeMemory.AllocZeroed((nuint)(_nodeCount * ZoneModifiers), sizeof(int));
        _pcpHigh = (int*)NativeMemory.Alloc(PcpOrders, sizeof(int));
        _pcpBatch = (int*)NativeMemory.Alloc(PcpOrders, sizeof(int));
        for (int o = 0; o < PcpOrders; o++)
        {
            _pcpBatch[o] = Math.Max(1, _options.PcpBatch >> o);
            _pcpHigh[o] = Math.Max(_pcpBatch[o], _options.PcpHigh >> o);
        }

        _pcpListsOffset = sizeof(ThreadCacheHeader);
        _pcpCountersOffset = _pcpListsOffset + _zoneCount * PcpOrders * sizeof(PcpList);
        // Ring capacities: room for high + 1 pages (a push may exceed high before the flush), rounded to a power of two.
        _pcpSlotsOffset = _pcpCountersOffset + _zoneCount * sizeof(ZoneEventCounters);
        _pcpCapacity = (int*)NativeMemory.Alloc(PcpOrders, sizeof(int));
        int slotsPerZone = 0;
        for (int o = 0; o < PcpOrders; o++)
        {
            _pcpCapacity[o] = (int)BitOperations.RoundUpToPowerOf2((uint)_pcpHigh[o] + 2);
            slotsPerZone += _pcpCapacity[o];
        }
        _pcp = new ThreadCacheRegistry(this, _pcpSlotsOffset + _zoneCount * slotsPerZone * sizeof(nint));
        Rcu = new RcuDomain(); // after every check: a rejected configuration takes no registry slot
        _retiredCounters = new long[_zoneCount * ZoneEventCounters.Count];

        (_initGfp, _initOnFree, _shuffle) = MemInitModes(memory.Checks);
        _freeHooks = _initOnFree || _kasan != null;
        for (int s = 0; s < memory.MaxSections; s++)
        {
            if (memory.IsSectionOnline(s)) OnlineSectionPages(s, layout);
        }
        ShuffleFreeMemory();
        _lru = new Lru(_nodeCount, _zones);
        _zonelists = new ZonelistSet([], []);
        RebuildZonelists();
        SetupWatermarks();
    }

    private static int s_nextId;

    /// <summary>Process-unique number of this allocator (the <c>allocators.system</c> metric attribute).</summary>
    public int Id { get; } = Interlocked.Increment(ref s_nextId);

    internal ZoneData* ZoneArray => _zones;

    /// <summary>The arena this allocator hands out.</summary>
    public PhysicalMemory Memory => _memory;

    /// <summary>The tunables.</summary>
    public PageAllocatorOptions Options => _options;

    /// <summary>Fault injection (fail_page_alloc); disabled by default.</summary>
    public FaultAttributes FaultInjection { get; }

    /// <summary>
    /// The RCU domain of everything built on this allocator: the page cache's lockless lookups, kfree_rcu and
    /// SLAB_TYPESAFE_BY_RCU slabs. Disposed with the allocator (queued callbacks run first).
    /// </summary>
    public RcuDomain Rcu { get; }

    /// <summary>Number of NUMA nodes.</summary>
    public int NodeCount => _nodeCount;

    /// <summary>All zones, including unpopulated ones, indexed by zone id.</summary>
    public IReadOnlyList<Zone> Zones => _zoneViews;

    /// <summary>The zone of a node.</summary>
    public Zone GetZone(int node, ZoneType type) => _zoneViews[node * ZonesPerNode + (int)type];

    /// <summary>The node of the CPU the calling thread runs on (numa_node_id).</summary>
    public int CurrentNode
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (_nodeCount == 1) return 0;
            int cpu = Thread.GetCurrentProcessorId();
            int[] map = _cpuToNode;
            return (uint)cpu < (uint)map.Length ? map[cpu] : cpu % _nodeCount;
        }
    }

    /// <summary>The home node of <paramref name="cpu"/> (cpu_to_node).</summary>
    public int CpuToNode(int cpu) => (uint)cpu < (uint)_cpuToNode.Length ? _cpuToNode[cpu] : cpu % _nodeCount;

    /// <summary>The zone fallback order for allocations preferring <paramref name="node"/> up to <paramref name="highest"/>.</summary>
    public IReadOnlyList<Zone> Zonelist(int node, ZoneType highest)
        => Array.ConvertAll(_zonelists.Lists[node * ZonesPerNode + (int)highest], id => _zoneViews[id]);

    /// <summary>Free pages in the buddy lists of all zones (pages on per-thread lists not included).</summary>
    public long NrFreePages
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _zoneCount; i++) sum += Volatile.Read(ref _zones[i].FreePages);
            return sum;
        }
    }

    /// <summary>Pages managed by all zones.</summary>
    public long ManagedPages
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _zoneCount; i++) sum += _zones[i].ManagedPages;
            return sum;
        }
    }

    /// <summary>The frame of a pfn, or null (pfn_to_page).</summary>
    public PageFrame* PfnToPage(ulong pfn) => _memory.PfnToPage(pfn);

    /// <summary>The bytes of a page (page_address).</summary>
    /// <exception cref="ArgumentException"><paramref name="page"/> is not a page frame of this allocator's memory.</exception>
    public byte* PageAddress(PageFrame* page)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _memory.PageAddress(page);
    }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary><see cref="PageAddress"/> for a frame the caller got from this allocator (no check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* AddressOf(PageFrame* page) => _memory.AddressOf(page);

    /// <summary>The frame of the page holding an address, or null (virt_to_page).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* VirtToPage(void* address) => _memory.VirtToPage(address);

    /// <summary>Zonelists per (node, highest zone): zone ids with the node's own first, and how many are its own.</summary>
    private sealed record ZonelistSet(int[][] Lists, int[] LocalCount);

    private static int[] BuildCpuToNode(PhysicalMemoryOptions physical)
    {
        if (physical.CpuToNode is { } map)
        {
            foreach (int n in map)
                if ((uint)n >= (uint)physical.Nodes) throw new ArgumentException($"CpuToNode names node {n}, but there are {physical.Nodes} nodes.");
            return (int[])map.Clone();
        }
        int cpus = Math.Max(Environment.ProcessorCount, 1);
        var result = new int[cpus];
        for (int c = 0; c < cpus; c++) result[c] = (int)((long)c * physical.Nodes / cpus);
        return result;
    }

    /// <summary>
    /// Closes the allocator: every thread's lists are flushed (in-flight operations waited for) and from here on every
    /// call throws <see cref="ObjectDisposedException"/>. The zone metadata stays until nothing references this object
    /// (its finalizer frees it), so a call racing the dispose reads nothing freed. The arena belongs to the caller.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        Rcu.Dispose(); // queued callbacks free pages: run them while the allocator still takes frees
        Volatile.Write(ref _disposed, true);
        DisposeReclaimer();
        StopReporting();
        _pcp.Dispose();
    }

    /// <summary>Frees the zone metadata once no caller can reach a disposed allocator (one never disposed keeps it: threads' lists may point at it).</summary>
    ~PageAllocator()
    {
        if (!_disposed) return;
        NativeMemory.AlignedFree(_zones);
        _lru.Dispose();
        NativeMemory.Free(_preferredZone);
        NativeMemory.Free(_pcpHigh);
        NativeMemory.Free(_pcpCapacity);
        NativeMemory.Free(_pcpBatch);
    }
}
