// One swap area (struct swap_info_struct, mm/swapfile.c): a real file with a mkswap v1 header in page 0 whose pages 1..last_page
// are swap slots. Per slot, swap_map holds a ushort: the number of PTEs that hold the entry in the low 15 bits, and
// SwapHasCache while the page sits in the swap cache. Slots are handed out by clusters of 256 (SWAPFILE_CLUSTER): each
// processor allocates forward through its own current cluster, and takes a new one from the free list, then from the
// nonfull list, when it runs out; a cluster whose last slot is freed goes back to the free list.
//
// Locks, in the order they nest: a processor's SwapPercpuCluster.Lock -> a cluster's SwapClusterInfo.Lock -> the
// SwapClusterLists.Lock. Never two of one kind at once, except CheckConsistency (which takes each kind in index order).
// The cluster lock guards the cluster's swap_map entries and Count; the list lock guards the lists and every Flags.
//
// Invariants (checked by CheckConsistency; Debug.Assert on the paths):
//   for each cluster c:  Count(c) = #{ slot s in c : swap_map[s] != 0 }               (bad slots count as used)
//   UsedPages           = sum over c of Count(c) - BadSlots,   BadSlots = 1 + (Clusters * 256 - MaxPages)
//   0 <= UsedPages <= Pages = MaxPages - 1 = last_page
//   Flags(c) = Free    <=> c is on the free list,    and then Count(c) = 0
//   Flags(c) = Nonfull <=> c is on the nonfull list, and then 0 < Count(c) < 256
//   Flags(c) = Full     => Count(c) = 256
//   Flags(c) = None    <=> exactly one processor's current cluster is c
//   swap_map[s] = SwapMapBad <=> s = 0 (the header) or s >= MaxPages (the tail of the last cluster)
using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Swap;

/// <summary>
/// One swap device (swap_info_struct): a swap file opened by <see cref="SwapTable.Swapon"/>, its slot map and its
/// cluster allocator. Thread-safe. See the comment at the top of SwapDevice.cs for its locks and invariants.
/// </summary>
public sealed unsafe partial class SwapDevice : IDisposable
{
    /// <summary>SWAPFILE_CLUSTER: slots per cluster.</summary>
    public const int ClusterSize = 256;

    /// <summary>SWAP_HAS_CACHE: the slot's page is in the swap cache (or being read into it).</summary>
    public const ushort SwapHasCache = 0x8000;

    /// <summary>SWAP_MAP_BAD: the slot can never be used (the header, or past the end of the area).</summary>
    public const ushort SwapMapBad = 0x7fff;

    /// <summary>SWAP_MAP_MAX here: the most PTEs one slot can be shared by (the kernel continues counts on extra pages; this map is 15 bits wide).</summary>
    public const ushort SwapMapMax = 0x7ffe;

    private const int ClusterShift = 8;
    private const int PercpuStride = CacheLines.FalseSharingSpan;

    private readonly SafeFileHandle _file;
    private readonly ushort* _map;
    private readonly SwapClusterInfo* _clusters;
    private readonly SwapClusterLists* _lists;
    private readonly byte* _percpu;
    private readonly int _percpuCount;
    private readonly uint _maxPages;
    private readonly int _clusterCount;
    private long _usedPages;
    private volatile bool _writeOk;
    private int _disposed;

    /// <summary>Opens and checks the swap file at <paramref name="path"/> (swapon's claim_swapfile, read_swap_header, setup_swap_map).</summary>
    /// <exception cref="InvalidDataException">The file is not a usable swap area; the message names the path and what was wrong.</exception>
    /// <exception cref="IOException">The file could not be opened or read.</exception>
    internal SwapDevice(string path, int type, int priority)
    {
        Path = System.IO.Path.GetFullPath(path);
        Type = type;
        Priority = priority;
        _file = File.OpenHandle(Path, FileMode.Open, FileAccess.ReadWrite);
        try
        {
            _maxPages = ReadHeader(_file, Path);
            CheckNoHoles(_file, Path, (long)_maxPages * PageFrame.PageSize);
        }
        catch
        {
            _file.Dispose();
            throw;
        }

        _clusterCount = (int)(((long)_maxPages + ClusterSize - 1) >> ClusterShift);
        long slots = (long)_clusterCount << ClusterShift;
        _map = (ushort*)NativeMemory.AllocZeroed((nuint)slots, sizeof(ushort));
        _clusters = (SwapClusterInfo*)NativeMemory.AllocZeroed((nuint)_clusterCount, (nuint)sizeof(SwapClusterInfo));
        _lists = (SwapClusterLists*)CacheLines.AllocIsolated((nuint)sizeof(SwapClusterLists));
        _percpuCount = Math.Max(1, Environment.ProcessorCount);
        _percpu = (byte*)CacheLines.AllocIsolated((nuint)(_percpuCount * PercpuStride));
        InitClusters(slots);
        _writeOk = true;
    }

    /// <summary>The swap file's full path.</summary>
    public string Path { get; }

    /// <summary>The device's index in its swap table: the type of its entries.</summary>
    public int Type { get; }

    /// <summary>Where the device comes in the allocation order: higher first (si->prio).</summary>
    public int Priority { get; internal set; }

    /// <summary>Usable slots (si->pages = last_page: every page but the header).</summary>
    public long Pages => _maxPages - 1;

    /// <summary>Slots in use: allocated, referenced by a PTE or in the swap cache (si->inuse_pages).</summary>
    public long UsedPages => Volatile.Read(ref _usedPages);

    /// <summary>New slots may be allocated (SWP_WRITEOK); cleared while swapoff empties the device.</summary>
    public bool WriteOk
    {
        get => _writeOk;
        internal set => _writeOk = value;
    }

    /// <summary>Failure injection for this device's writes (fail_make_request): a failing <see cref="WritePage"/> throws an IOException (EIO).</summary>
    public FaultAttributes FailMakeRequest { get; } = new();

    /// <summary>Whether <see cref="FailMakeRequest"/> fails reads too (<see cref="ReadPage"/>, <see cref="ReadPages"/>).</summary>
    public bool FailMakeRequestReads { get; set; }

    /// <summary>Slots in the map including the header: last_page + 1 (si->max).</summary>
    internal uint MaxPages => _maxPages;

    /// <summary>Clusters on the free list.</summary>
    internal int FreeClusters => Volatile.Read(ref _lists->FreeCount);

    /// <summary>Clusters on the nonfull list.</summary>
    internal int NonfullClusters => Volatile.Read(ref _lists->NonfullCount);

    /// <summary>Clusters of the device.</summary>
    internal int Clusters => _clusterCount;

    /// <summary>The raw swap_map entry of slot <paramref name="offset"/> (for checks and tests).</summary>
    internal ushort MapEntry(uint offset) => Volatile.Read(ref _map[offset]);

    private SwapPercpuCluster* Percpu(int index) => (SwapPercpuCluster*)(_percpu + (nint)index * PercpuStride);

    /// <summary>Marks the header and the last cluster's tail bad, counts them into their clusters and lists every cluster.</summary>
    private void InitClusters(long slots)
    {
        _map[0] = SwapMapBad;
        for (long s = _maxPages; s < slots; s++) _map[s] = SwapMapBad;
        *_lists = new SwapClusterLists { FreeHead = -1, NonfullHead = -1 }; // AllocIsolated does not zero
        for (int c = _clusterCount - 1; c >= 0; c--)
        {
            int bad = 0;
            for (int i = 0; i < ClusterSize; i++) if (_map[(c << ClusterShift) + i] != 0) bad++;
            _clusters[c].Count = bad;
            ListAdd(c, bad == 0 ? ClusterFlags.Free : ClusterFlags.Nonfull);
        }
        for (int i = 0; i < _percpuCount; i++) *Percpu(i) = new SwapPercpuCluster { Cluster = -1 };
    }

    /// <summary>
    /// Recomputes the used slots and every cluster's count from swap_map and checks the lists against the flags (the
    /// invariants at the top of SwapDevice.cs). Takes every lock, so it may run while other threads use the device.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant does not hold; the message says which and where.</exception>
    public void CheckConsistency()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        for (int i = 0; i < _percpuCount; i++) NativeSpinLock.Acquire(&Percpu(i)->Lock);
        for (int c = 0; c < _clusterCount; c++) NativeSpinLock.Acquire(&_clusters[c].Lock);
        NativeSpinLock.Acquire(&_lists->Lock);
        try
        {
            string? error = FindInconsistency();
            if (error != null) throw new InvalidOperationException($"swap device {Path} (type {Type}): {error}");
        }
        finally
        {
            NativeSpinLock.Release(&_lists->Lock);
            for (int c = _clusterCount - 1; c >= 0; c--) NativeSpinLock.Release(&_clusters[c].Lock);
            for (int i = _percpuCount - 1; i >= 0; i--) NativeSpinLock.Release(&Percpu(i)->Lock);
        }
    }

    /// <summary>The first broken invariant, or null. Every lock held.</summary>
    private string? FindInconsistency()
    {
        long used = 0;
        for (int c = 0; c < _clusterCount; c++)
        {
            int count = 0;
            for (int i = 0; i < ClusterSize; i++)
            {
                uint s = (uint)((c << ClusterShift) + i);
                ushort entry = _map[s];
                bool mustBeBad = s == 0 || s >= _maxPages;
                if (mustBeBad != (entry == SwapMapBad))
                    return $"swap_map[{s}] = 0x{entry:x4}, but slot {s} {(mustBeBad ? "is" : "is not")} outside the usable slots 1..{_maxPages - 1}";
                if (entry != 0) count++;
                if (entry != 0 && !mustBeBad) used++;
            }
            if (count != _clusters[c].Count) return $"cluster {c} counts {_clusters[c].Count} used slots, its swap_map has {count}";
            int owners = 0;
            for (int i = 0; i < _percpuCount; i++) if (Percpu(i)->Cluster == c) owners++;
            string? flagError = _clusters[c].Flags switch
            {
                ClusterFlags.Free when count != 0 => "is on the free list with used slots",
                ClusterFlags.Nonfull when count == 0 || count == ClusterSize => $"is on the nonfull list with {count} used slots",
                ClusterFlags.Full when count != ClusterSize => $"is marked full with {count} used slots",
                ClusterFlags.None when owners != 1 => $"is isolated but {owners} processors hold it",
                not ClusterFlags.None when owners != 0 => $"is {_clusters[c].Flags} but a processor holds it",
                _ => null,
            };
            if (flagError != null) return $"cluster {c} {flagError}";
        }
        if (used != UsedPages) return $"UsedPages is {UsedPages}, swap_map has {used} used slots";
        return CheckList(_lists->FreeHead, ClusterFlags.Free, _lists->FreeCount)
            ?? CheckList(_lists->NonfullHead, ClusterFlags.Nonfull, _lists->NonfullCount);
    }

    private string? CheckList(int head, ClusterFlags flags, int expected)
    {
        int n = 0, prev = -1;
        for (int c = head; c >= 0; prev = c, c = _clusters[c].Next)
        {
            if (_clusters[c].Flags != flags) return $"cluster {c} is on the {flags} list marked {_clusters[c].Flags}";
            if (_clusters[c].Prev != prev) return $"cluster {c} on the {flags} list links back to {_clusters[c].Prev}, not {prev}";
            if (++n > _clusterCount) return $"the {flags} list loops";
        }
        int marked = 0;
        for (int c = 0; c < _clusterCount; c++) if (_clusters[c].Flags == flags) marked++;
        return n == expected && n == marked ? null : $"the {flags} list holds {n} clusters, counts {expected}, {marked} are marked {flags}";
    }

    /// <summary>Closes the file and frees the map. The caller (swapoff, or the table's Dispose) ensures no thread still uses the device.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _writeOk = false;
        _file.Dispose();
        NativeMemory.Free(_map);
        NativeMemory.Free(_clusters);
        CacheLines.Free(_lists);
        CacheLines.Free(_percpu);
    }

    /// <summary>"path (type n): used/pages".</summary>
    public override string ToString() => $"{Path} (type {Type}): {UsedPages}/{Pages} slots used";

    [Conditional("DEBUG")]
    private void AssertCount(int cluster)
        => Debug.Assert((uint)_clusters[cluster].Count <= ClusterSize, $"cluster {cluster} count {_clusters[cluster].Count}");
}
