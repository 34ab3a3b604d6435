using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>A cache's native state (the kernel's <c>struct kmem_cache</c>). Layout values are fixed at creation.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct KmemCacheData
{
    // Read on the fast paths.

    /// <summary>
    /// <see cref="LiveKey"/> while the per-thread fast paths serve this cache, 0 while they may not (destroyed, debug
    /// flags, fault injection on). While it is 0 every thread's entry for the cache is empty (closing a cache flushes
    /// them and the slow paths then leave them alone), so the fast paths need no test of it but one: a free reads it
    /// before it touches the arena, which a dispose frees after closing every cache.
    /// </summary>
    public long Key;
    public int CpuIndex;          // this cache's entry in every thread's SlabThreadContext
    public int FastPath;          // 1 when per-thread slabs serve this cache (no debug flags, no KASAN)
    public int Size;              // slot size: object, red zones and metadata (s->size)
    public int ObjectSize;        // what callers asked for (s->object_size)
    public int RedLeftPad;        // bytes before the object inside its slot
    public int Words;             // 64-bit words of each of a slab's two bitmaps (free here, freed by other threads)
    public uint Reciprocal;       // ceil(2^32 / Size): slot index = offset * Reciprocal >> 32
    public int Objects;           // objects per slab
    public uint SlabBytes;        // Objects * Size: offsets from here on are past the last slot
    public int SerializedFree;    // 1: every free claims its object with an atomic (SlabAllocatorOptions.SerializedFrees)
    public ulong LastWordMask;    // the valid bits of a bitmap's last word
    public int BitmapInFrame;     // 1: one word per bitmap, kept in the slab's head frame (see SlabPage)
    public int RemoteDelta;       // words from a slab's local bitmap to its remote one
    public nint BitmapDelta;      // flat arena: bytes from a slab's head frame to its local bitmap
    public nint ExtDelta;         // flat arena: bytes from a frame to its page_ext words
    public nuint ArenaBase;       // flat arena: address of pfn 0 (0 for a sparse arena)
    public nuint ArenaBytes;      // flat arena: its size (0 for a sparse arena: frees take the general lookup)
    public PageFrame* MemMap;     // flat arena: the frame array

    public int Flags;             // SlabFlags
    public int InUse;             // object + right red zone: where the slot's metadata starts (s->inuse)
    public int TrackOffset;       // StoreUser: two Track records from the object start
    public int OrigSizeOffset;    // kmalloc with debug: requested size (uint) from the object start; -1 when absent
    public int KasanOffset;       // KASAN: the quarantine link from the object start; -1 when KASAN is off
    public int Order;
    public int Align;
    public int HintCapacity;      // entries of RemoteHints (thread context ids below it have one)
    public int MinPartial;
    public int NodeCount;
    public int Id;
    public int KmallocIndex;      // size class of a kmalloc cache, -1 for other caches
    public long LiveKey;          // this cache's key while the fast paths serve it (unique in the process)
    public nint Handle;           // GCHandle of the managed KmemCache
    public byte* Name;            // NUL-terminated UTF-8, for out-of-process inspectors
    public KmemCacheData* NextCache;   // the slab allocator's native cache list
    public KmemCacheData* PrevCache;
    public KmemCacheNode* Nodes;
    public byte* RemoteHints;     // [thread context id]: 1 when another thread freed into a slab that thread owns (see KmemCache.NoteRemoteFree)

    // Statistics the per-thread entries do not keep: paths without a thread entry (debug caches, node-bound and
    // drained calls), and the counters of thread contexts that retired. Interlocked.
    public long AllocSlowPath;
    public long FreeSlowPath;
    public long AllocFailures;
    public long SlabsAllocated;
    public long SlabsFreed;
    public long CorruptionsFound;
    public long RetiredAllocFastPath;
    public long RetiredFreeFastPath;
    public long RetiredRefills;
    public long RetiredFlushes;
    public long RetiredRemoteFrees;
    public long RetiredClaims;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Has(SlabFlags flag) => (Flags & (int)flag) != 0;
}

/// <summary>
/// Per-node slab lists (the kernel's <c>struct kmem_cache_node</c>), under ListLock: slabs no thread owns that have
/// free objects (partial), and for debug caches the full ones (other caches' full slabs are on no list, as in SLUB).
/// </summary>
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
    public long FreeObjects;      // free objects in the local bitmaps of the slabs on Partial (their remote bitmaps not counted)
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
