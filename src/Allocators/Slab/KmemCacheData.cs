using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>A cache's native state (the kernel's <c>struct kmem_cache</c>). Layout values are fixed at creation.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct KmemCacheData
{
    // Read on the fast paths.
    public int RegistrySlot;
    public int FastPath;          // 1 when per-thread magazines serve this cache
    public long RegistryId;
    public int Size;              // slot size: object, red zones and metadata (s->size)
    public int ObjectSize;        // what callers asked for (s->object_size)
    public int RedLeftPad;        // bytes before the object inside its slot
    public int Offset;            // free pointer offset from the object start
    public uint Reciprocal;       // ceil(2^32 / Size), for slot index arithmetic
    public int Objects;           // objects per slab
    public uint SlabBytes;        // Objects * Size: offsets from here on are past the last slot
    public ulong DivisorMagic;    // ceil(2^64 / Size): offset * DivisorMagic < DivisorMagic iff Size divides offset
    public ulong Random;          // freelist hardening secret
    public int Flags;             // SlabFlags
    public int InUse;             // object + right red zone: where the slot's metadata starts (s->inuse)
    public int TrackOffset;       // StoreUser: two Track records from the object start
    public int OrigSizeOffset;    // kmalloc with debug: requested size (uint) from the object start; -1 when absent
    public int Order;
    public int Align;
    public int MagazineCapacity;
    public int MaxStash;          // non-empty (and, as many, empty) magazines a thread keeps beyond its two loaded ones
    public int MinPartial;
    public int NodeCount;
    public int Id;
    public int KmallocIndex;      // size class of a kmalloc cache, -1 for other caches
    public nint Handle;           // GCHandle of the managed KmemCache
    public byte* Name;            // NUL-terminated UTF-8, for out-of-process inspectors
    public KmemCacheData* NextCache;   // the slab allocator's native cache list
    public KmemCacheData* PrevCache;
    public KmemCacheNode* Nodes;

    // Slow-path statistics (Interlocked or under locks) that no fast path or magazine exchange writes: slow paths
    // through magazines count per thread (MagazineCache), these count the rest.
    public long AllocSlowPath;
    public long FreeSlowPath;
    public long AllocFailures;
    public long SlabsAllocated;
    public long SlabsFreed;

    // Depot of magazines, under DepotLock, on a cache line of its own (DepotLineOffset): every exchange writes it, and
    // it must not drag the fast path's fields or the counters above from other cores with it.
    public int DepotLock;
    public int NrFull;
    public int NrEmpty;
    public int MaxFull;
    public Magazine* FullMagazines;   // for any thread
    public Magazine** OwnedFull;      // [owner id]: full magazines for that thread cache only
    public Magazine* EmptyMagazines;
    public long DepotExchanges;
    public int OwnedCapacity;

    public long CorruptionsFound;
    public long LiveMagazines;    // created less freed, all of this cache's (KmemCache.MagazineCensus); rarely written

    /// <summary>Where the depot's line starts (a multiple of 64; the layout test keeps it so).</summary>
    public const int DepotLineOffset = 192;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Has(SlabFlags flag) => (Flags & (int)flag) != 0;
}

/// <summary>Per-node slab lists (the kernel's <c>struct kmem_cache_node</c>), under ListLock.</summary>
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal unsafe struct KmemCacheNode
{
    public int ListLock;
    public int Pad;
    public PageFrame* Partial;
    public PageFrame* Full;
    public long NrPartial;
    public long NrFull;
    public long NrSlabs;
    public long TotalObjects;
    public long InUseObjects;
}

/// <summary>A magazine (Bonwick): a stack of object pointers owned by one thread or parked in the depot.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Magazine
{
    public Magazine* Next;
    public int Count;
    public int Capacity;
    public int Owner;             // in the depot: the thread cache it is for (0: anyone), see KmemCache.TakeFullFromDepot
    public int Limit;             // as a thread's loaded or remote magazine: frees push while Count < Limit (KmemCache.SetFillLimit)
    public nint Guard;            // always 0: Objects[-1], so "is obj on top?" needs no empty check

    public void** Objects
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (void**)((byte*)Unsafe.AsPointer(ref this) + sizeof(Magazine));
    }

    /// <summary>
    /// A magazine on cache lines of its own: two threads' magazines must never share a line (or a prefetcher's line
    /// pair), or every push and pop of one would invalidate the other's (false sharing between per-thread caches).
    /// </summary>
    public static Magazine* Create(int capacity)
    {
        var m = (Magazine*)Threading.CacheLines.AllocIsolated((nuint)(sizeof(Magazine) + capacity * sizeof(void*)));
        m->Next = null;
        m->Count = 0;
        m->Capacity = capacity;
        m->Owner = 0;
        m->Limit = capacity;
        m->Guard = 0;
        return m;
    }

    /// <summary>Frees a magazine from <see cref="Create"/>.</summary>
    public static void Free(Magazine* m) => Threading.CacheLines.Free(m);
}

/// <summary>A thread's magazines for one cache, after the <see cref="Threading.ThreadCacheHeader"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MagazineCache
{
    public Threading.ThreadCacheHeader Header;
    public Magazine* Loaded;
    public Magazine* Previous;
    public Magazine* Remote;      // objects of slabs other threads took from: never reused here, parked in the depot
    public int OwnerId;           // marks the slabs this thread refills from (PageFrame.MapCount, see SlabPage.NoteRefill); 0 = untracked
    public long AllocFastPath;
    public long FreeFastPath;
    public long Refills;
    public long Flushes;
    public long AllocSlowPath;    // slow paths through this thread's magazines (the others count in KmemCacheData)
    public long FreeSlowPath;

    // Slow paths only: this thread's own spare magazines, so a burst of frees then allocations reuses magazines whose
    // lines are already in this core's cache instead of exchanging them through the shared depot (every magazine that
    // changes threads costs a cache-line transfer per eight objects). Both linked through Magazine.Next.
    public Magazine* Stash;       // non-empty magazines, newest first
    public Magazine* Spares;      // empty magazines
    public int NrStash;
    public int NrSpares;

    // How many objects this thread keeps per magazine (KmemCache.Adapt): from MinTarget, doubled by a run of slow paths
    // in one direction, halved by slow paths that keep changing direction.
    public int Target;
    public int LastSlowPath;      // direction of the last slow path that moved a whole magazine: +1 allocation, -1 free, 0 none
    public int DirectionChanges;  // changes of direction since the last slow path that kept it
    public int FeedsOthers;       // 1 while this thread's frees feed other threads (see KmemCache.FeedsOtherThreads)
    public long ObjectsIn;        // objects its slow paths brought into its magazines (slab refills, depot takes)
    public long ObjectsOut;       // objects its slow paths moved out of its magazines (to the depot or the slabs)

    /// <summary>
    /// The stand-in for a cache without magazines (debug flags) in per-thread handles: permanently "held by a drainer",
    /// so every operation through it takes the plain path, and handles need no test of their own.
    /// </summary>
    public static readonly MagazineCache* Disabled = CreateRefusing();

    /// <summary>A block that every fast-path operation finds "held by a drainer" (never freed; for stand-ins).</summary>
    public static MagazineCache* CreateRefusing()
    {
        var mc = (MagazineCache*)NativeMemory.AlignedAlloc((nuint)sizeof(MagazineCache), 64);
        *mc = default;
        mc->Header.DrainRequested = 1;
        return mc;
    }
}

/// <summary>Who allocated or freed an object (the kernel's <c>struct track</c>), kept in the slot with StoreUser.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Track
{
    public int CallSite;          // index into the call-site table; 0 = none
    public int ThreadId;
    public int Cpu;
    public int Pad;
    public long Timestamp;        // Environment.TickCount64 when recorded
}
