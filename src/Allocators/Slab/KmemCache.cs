using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

/// <summary>
/// A slab cache of fixed-size objects (the kernel's <c>kmem_cache</c>): slabs are pages from the page allocator,
/// free objects are linked through hardened in-object pointers, per-node partial and full slab lists sit behind a
/// per-thread magazine layer (Bonwick's magazines and depot) that serves the fast path with no lock and no atomic.
/// </summary>
/// <remarks>
/// Thread-safe. Objects may be freed on any thread. Allocation failure returns null unless the cache has
/// <see cref="SlabFlags.Panic"/>. Misuse (double free, foreign, interior or wrong-cache pointer) throws a
/// <see cref="Diagnostics.MemoryCorruptionException"/> and changes nothing; corruption found in debug caches is
/// reported (<see cref="Reports"/>) and repaired.
/// </remarks>
public sealed unsafe partial class KmemCache : IDisposable, IThreadCacheOwner
{
    internal const int WordSize = 8;
    private const int MaxSlabOrder = 3;

    private readonly SlabAllocator _owner;
    private readonly PhysicalMemory _memory;
    private readonly PageAllocator _pages;
    private readonly KmemCacheData* _d;
    private readonly ThreadCacheRegistry? _registry;
    private readonly SlabConstructor? _ctor;
    private GCHandle _handle;
    private bool _destroyed;

    internal KmemCache(SlabAllocator owner, string name, int size, int align, SlabFlags flags, SlabConstructor? ctor, int id)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, "Object size must be at least 1 byte.");
        if (align < 0 || (align & (align - 1)) != 0 || align > SlabAllocator.KmallocMaxCacheSize)
            throw new ArgumentOutOfRangeException(nameof(align), align, "Alignment must be 0 or a power of two up to 8192.");
        _owner = owner;
        _pages = owner.Pages;
        _memory = owner.Pages.Memory;
        _ctor = ctor;
        Name = name;

        _d = (KmemCacheData*)NativeMemory.AlignedAlloc((nuint)sizeof(KmemCacheData), 64);
        NativeMemory.Clear(_d, (nuint)sizeof(KmemCacheData));
        _d->Id = id;
        _d->KmallocIndex = -1;
        _d->Flags = (int)flags;
        _d->ObjectSize = size;
        _d->NodeCount = _pages.NodeCount;
        CalculateSizes(size, align, flags, ctor != null);
        _d->Random = (ulong)Random.Shared.NextInt64() | 1;
        _d->MinPartial = Math.Clamp(BitOperations.Log2((uint)_d->Size) / 2, 5, 10);
        _d->MagazineCapacity = Math.Clamp(32768 / _d->Size, 16, 128);
        _d->MaxFull = Math.Max(16, (int)(DepotBytes(_memory) / _d->Size / _d->MagazineCapacity));
        _d->MaxStash = Math.Min(16, StashBytes / (_d->Size * _d->MagazineCapacity));
        _d->Nodes = (KmemCacheNode*)NativeMemory.AlignedAlloc((nuint)(_d->NodeCount * sizeof(KmemCacheNode)), 64);
        NativeMemory.Clear(_d->Nodes, (nuint)(_d->NodeCount * sizeof(KmemCacheNode)));

        if ((flags & SlabFlags.Debug) == 0)
        {
            _registry = new ThreadCacheRegistry(this, sizeof(MagazineCache));
            _d->RegistrySlot = _registry.Slot;
            _d->RegistryId = _registry.Id;
            _d->FastPath = 1;
        }
        else
        {
            _d->RegistrySlot = int.MaxValue;
        }
        _handle = GCHandle.Alloc(this, GCHandleType.Weak);
        _d->Handle = GCHandle.ToIntPtr(_handle);
        _d->Name = Diagnostics.NativeStrings.Create(name);
    }

    /// <summary>The cache's name (as in /proc/slabinfo).</summary>
    public string Name { get; }

    /// <summary>The object size callers asked for (object_size).</summary>
    public int ObjectSize => _d->ObjectSize;

    /// <summary>Bytes one object occupies in a slab, red zones and metadata included (size).</summary>
    public int SlotSize => _d->Size;

    /// <summary>Object alignment.</summary>
    public int Align => _d->Align;

    /// <summary>The cache's flags.</summary>
    public SlabFlags Flags => (SlabFlags)_d->Flags;

    /// <summary>Page order of each slab.</summary>
    public int Order => _d->Order;

    /// <summary>Objects per slab.</summary>
    public int ObjectsPerSlab => _d->Objects;

    /// <summary>Where the free pointer sits, from the object's start (inside the object unless debugging or a constructor needs it outside).</summary>
    public int FreePointerOffset => _d->Offset;

    /// <summary>Bytes of red zone before each object.</summary>
    public int RedLeftPad => _d->RedLeftPad;

    /// <summary>The slab allocator this cache belongs to.</summary>
    public SlabAllocator Owner => _owner;

    internal KmemCacheData* Data => _d;

    /// <summary>
    /// Lays out a slot like SLUB's calculate_sizes: object, right red zone, free pointer (outside the object when
    /// poisoning, red zoning or constructing), two tracks, kmalloc's original size, left red zone, alignment.
    /// </summary>
    private void CalculateSizes(int objectSize, int align, SlabFlags flags, bool hasCtor)
    {
        int a = Math.Max(align, WordSize);
        if ((flags & SlabFlags.HwCacheAlign) != 0)
        {
            int line = 64;
            while (objectSize <= line / 2 && line > WordSize) line /= 2;
            a = Math.Max(a, line);
        }
        bool redZone = (flags & SlabFlags.RedZone) != 0;
        bool debugMeta = (flags & (SlabFlags.RedZone | SlabFlags.StoreUser)) != 0;
        int size = AlignUp(objectSize, WordSize);
        if (redZone && size == objectSize) size += WordSize;
        _d->InUse = size;
        if ((flags & (SlabFlags.Poison | SlabFlags.RedZone)) != 0 || hasCtor)
        {
            _d->Offset = size;
            size += WordSize;
        }
        else
        {
            _d->Offset = objectSize >= 2 * WordSize ? (objectSize / 2) & ~(WordSize - 1) : 0;
        }
        _d->TrackOffset = -1;
        if ((flags & SlabFlags.StoreUser) != 0)
        {
            _d->TrackOffset = size;
            size += 2 * sizeof(Track);
        }
        _d->OrigSizeOffset = -1;
        if ((flags & SlabFlags.Kmalloc) != 0 && debugMeta)
        {
            _d->OrigSizeOffset = size;
            size += WordSize;
        }
        int leftPad = redZone ? AlignUp(WordSize, a) : 0;
        _d->RedLeftPad = leftPad;
        _d->Size = AlignUp(size + leftPad, a);
        _d->Align = a;

        int order = 0;
        int best = -1;
        double bestWaste = double.MaxValue;
        for (order = 0; order <= PageAllocator.MaxOrder; order++)
        {
            int bytes = PageFrame.PageSize << order;
            int objects = bytes / _d->Size;
            if (objects < 1) continue;
            double waste = (bytes - objects * (double)_d->Size) / bytes;
            if (waste < bestWaste) { bestWaste = waste; best = order; }
            if (waste <= 1.0 / 16 && (objects >= 8 || order == MaxSlabOrder)) break;
            if (order >= MaxSlabOrder && best >= 0) { order = best; break; }
        }
        if (order > PageAllocator.MaxOrder) order = best;
        if (order < 0) throw new ArgumentOutOfRangeException(nameof(objectSize), objectSize, "Object too large for a slab.");
        _d->Order = order;
        _d->Objects = Math.Min((PageFrame.PageSize << order) / _d->Size, 65535);
        _d->Reciprocal = (uint)((0x1_0000_0000UL + (ulong)_d->Size - 1) / (ulong)_d->Size);
        _d->SlabBytes = (uint)(_d->Objects * _d->Size);
        _d->DivisorMagic = ulong.MaxValue / (ulong)_d->Size + 1;
    }

    /// <summary>
    /// How many bytes of freed objects a cache's depot may hold: 1/64 of the arena, at most 4 MiB. Enough that a burst of
    /// a thousand 4 KiB objects comes back through magazines instead of the slab lists (whose freelist writes all land
    /// in the same few cache sets at a 4 KiB stride), little enough that the caches of a small arena hoard little; the
    /// shrinkers empty depots under memory pressure.
    /// </summary>
    private static long DepotBytes(PhysicalMemory memory) => Math.Clamp(memory.Options.EffectiveMaxSize / 64, 512 * 1024, 4 << 20);

    /// <summary>Bytes of objects a thread may keep in its own spare magazines of one cache (see <see cref="MagazineCache.Stash"/>).</summary>
    private const int StashBytes = 128 * 1024;

    internal static int AlignUp(int value, int align) => (value + align - 1) & ~(align - 1);

    /// <summary>Allocates an object (kmem_cache_alloc). Null on failure, or <see cref="OutOfMemoryException"/> with <see cref="SlabFlags.Panic"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc(Gfp gfp = Gfp.Kernel)
    {
        if (!_owner.FailslabActive)
        {
            void* obj = AllocFast(_d);
            if (obj != null)
            {
                if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear(obj, (nuint)_d->ObjectSize);
                return obj;
            }
        }
        return AllocSlow(gfp, -1, _d->ObjectSize);
    }

    /// <summary>Allocates an object from <paramref name="node"/> (kmem_cache_alloc_node).</summary>
    public void* AllocNode(Gfp gfp, int node) => AllocSlow(gfp, node, _d->ObjectSize);

    /// <summary>The magazine fast path: pops the current thread's loaded magazine, or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* AllocFast(KmemCacheData* d)
    {
        ThreadCacheHeader* c = ThreadCacheRegistry.Lookup(d->RegistrySlot, d->RegistryId);
        return c != null ? PopThreadCache((MagazineCache*)c) : null;
    }

    /// <summary>Pops an object off a thread's loaded magazine; null when it is empty or a drainer holds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* PopThreadCache(MagazineCache* mc)
    {
        ThreadCacheHeader* c = &mc->Header;
        if (!ThreadCacheHeader.TryEnter(c)) return null;
        Magazine* m = mc->Loaded;
        void* obj = null;
        int n = m->Count - 1;
        if (n >= 0)
        {
            obj = m->Objects[n];
            m->Count = n;
            if (SlabStatistics.Enabled) mc->AllocFastPath++;
        }
        ThreadCacheHeader.Exit(c);
        return obj;
    }

    /// <summary>Frees an object of this cache (kmem_cache_free); null is ignored.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(void* obj)
    {
        if (obj == null) return;
        PageFrame* slab = SlabOf(_memory, obj);
        if (slab == null || (slab->FlagsAndZone & (uint)PageFlags.Slab) == 0 || slab->Private != (nuint)_d)
        {
            ThrowNotThisCache(obj, slab);
        }
        if (!FreeFast(_memory, _d, slab, obj)) FreeSlow(slab, obj);
    }

    /// <summary>The head frame of the page that holds <paramref name="obj"/>, or null outside the arena (virt_to_slab without the type check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageFrame* SlabOf(PhysicalMemory memory, void* obj)
    {
        PageFrame* page = memory.VirtToPage(obj);
        if (page != null && (page->FlagsAndZone & (uint)PageFlags.Tail) != 0) page = (PageFrame*)page->Private;
        return page;
    }

    /// <summary>Pushes a validated object onto the current thread's magazine; false when the slow path must run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool FreeFast(PhysicalMemory memory, KmemCacheData* d, PageFrame* slab, void* obj)
    {
        if (!IsFreeableObject(d, slab, (nuint)obj - (nuint)memory.PageAddress(slab), obj)) return false;
        ThreadCacheHeader* c = ThreadCacheRegistry.Lookup(d->RegistrySlot, d->RegistryId);
        return c != null && PushThreadCache((MagazineCache*)c, slab, obj);
    }

    /// <summary>
    /// Validates <paramref name="obj"/> (at <paramref name="offset"/> bytes from the start of <paramref name="slab"/>, a
    /// slab of <paramref name="d"/>) and pushes it onto <paramref name="mc"/>; false when the slow path must run.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool FreeToMagazine(MagazineCache* mc, KmemCacheData* d, PageFrame* slab, nuint offset, void* obj)
        => IsFreeableObject(d, slab, offset, obj) && PushThreadCache(mc, slab, obj);

    /// <summary>
    /// True when <paramref name="offset"/> (from the slab's first byte) is the start of an object, checked with one
    /// multiply (Lemire's divisibility test), and the object does not head its slab's free list (it would be free already:
    /// the slow path reports the double free).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsFreeableObject(KmemCacheData* d, PageFrame* slab, nuint offset, void* obj)
    {
        ulong slot = (ulong)(offset - (nuint)d->RedLeftPad);
        return slot < d->SlabBytes && slot * d->DivisorMagic < d->DivisorMagic && SlabPage.Freelist(slab) != obj;
    }

    /// <summary>
    /// Pushes an object onto a thread's loaded magazine, or onto its remote magazine when the object's slab has been
    /// refilled from by one other thread only (reusing it here would put this thread's writes in cache lines that thread
    /// is using: passive false sharing); false when that magazine is full (at its <see cref="Magazine.Limit"/>),
    /// held by a drainer, or the object was just freed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool PushThreadCache(MagazineCache* mc, PageFrame* slab, void* obj)
    {
        ThreadCacheHeader* c = &mc->Header;
        if (!ThreadCacheHeader.TryEnter(c)) return false;
        Magazine* m = SlabPage.IsRemote(slab, mc->OwnerId) ? mc->Remote : mc->Loaded;
        int n = m->Count;
        // Objects[-1] is the magazine's guard word (null): an empty magazine needs no test of its own.
        if (n < m->Limit && m->Objects[n - 1] != obj)
        {
            m->Objects[n] = obj;
            m->Count = n + 1;
            if (SlabStatistics.Enabled) mc->FreeFastPath++;
            ThreadCacheHeader.Exit(c);
            return true;
        }
        ThreadCacheHeader.Exit(c);
        return false;
    }

    /// <summary>
    /// The calling thread's magazines of this cache (<see cref="KmemCacheThread"/>): take it once before a run of
    /// operations on one thread and allocate and free through it without the per-call thread-local lookup.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache was destroyed.</exception>
    public KmemCacheThread ThisThread() => new(this, _d, ThisThreadMagazines(), _memory, _owner.Failslab);

    /// <summary>The calling thread's magazine cache, or <see cref="MagazineCache.Disabled"/> for a cache without magazines (debug).</summary>
    internal MagazineCache* ThisThreadMagazines()
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        if (_d->FastPath == 0) return MagazineCache.Disabled;
        return (MagazineCache*)_registry!.GetOrCreateCurrent();
    }

    /// <summary>True once the cache is destroyed.</summary>
    internal bool IsDestroyed => _destroyed;

    /// <summary>Magazine caches of exited threads adopted by threads that registered after them.</summary>
    internal long ThreadCacheAdoptions => _registry?.Adoptions ?? 0;

    /// <summary>The managed cache of a native cache record (slow paths only).</summary>
    internal static KmemCache FromData(KmemCacheData* d)
        => (KmemCache)(GCHandle.FromIntPtr(d->Handle).Target ?? throw new ObjectDisposedException("kmem_cache"));

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (object {ObjectSize} B, slot {SlotSize} B, {ObjectsPerSlab}/slab, order {Order})";
}
