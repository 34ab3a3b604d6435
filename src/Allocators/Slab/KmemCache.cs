using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

/// <summary>
/// A slab cache of fixed-size objects (the kernel's <c>kmem_cache</c>): slabs are pages from the page allocator, free
/// objects are linked through hardened in-object pointers, and each thread allocates from slabs it owns, as SLUB's CPUs
/// do from their CPU slabs (here per thread, with no lock and no atomic on the fast paths).
/// </summary>
/// <remarks>
/// <para>Thread-safe. Objects may be freed on any thread. Allocation failure returns null unless the cache has
/// <see cref="SlabFlags.Panic"/>. Misuse (double free, foreign, interior or wrong-cache pointer) throws a
/// <see cref="Diagnostics.MemoryCorruptionException"/> and changes nothing; corruption found in debug caches is
/// reported (<see cref="Reports"/>) and repaired.</para>
/// <para><b>Where a free object can be</b> (tiers):</para>
/// <list type="number">
/// <item>On a thread's <see cref="SlabCpu.Freelist"/>: objects of that thread's current slab (<see cref="SlabCpu.Slab"/>),
/// popped by its allocations and pushed by its own frees of that slab's objects. Owner thread only.</item>
/// <item>On a slab's own free list (<see cref="SlabPage.Freelist"/>, length <see cref="SlabPage.FreeCount"/>): written by
/// the owner thread while a thread owns the slab (its current slab's list is empty: those objects are in tier 1), under
/// the node's list lock otherwise.</item>
/// <item>On a slab's remote list (in <see cref="SlabPage.State"/>): objects other threads freed into a slab they do not
/// own, pushed with one compare-exchange; the owner (or the node lock holder) takes the whole list with one exchange.</item>
/// </list>
/// <para><b>Where a slab can be</b>: a thread's current slab; on a thread's partial list (<see cref="SlabCpu.Partial"/>:
/// free objects) or full list (<see cref="SlabCpu.Full"/>: none); on its node's partial list (no owner, free objects);
/// or floating: no owner, no list, no free object (SLUB keeps full slabs on no list either; here slabs float when a
/// drain takes them from their thread). A thread keeps every slab it allocated from until a drain, like mimalloc's
/// heaps, so however large its live set its own frees need no atomic and no lock; empty slabs go back when the cache is
/// shrunk (by the shrinkers under memory pressure, the idle trimmer, or a caller). A thread's free into a slab it
/// floated takes it back (one compare-exchange); any other thread's free into a floating slab puts it on its node's
/// list, so a thread that frees what another allocated never collects that thread's slabs. Debug caches keep every
/// slab on a node list and do everything under its lock.</para>
/// <para><b>Locks</b>, outermost first: the thread-context registry's lock (drains) → a node's <c>ListLock</c> (node
/// partial/full lists, <see cref="KmemCacheNode"/> counters, the free lists of slabs on them) → the page allocator's
/// locks. A thread inside its context (<see cref="ThreadCacheHeader.TryEnter"/>) never waits for the registry lock and
/// never calls the page allocator (slab growth and discards run outside it), so a drain can always finish.</para>
/// <para><b>Invariants</b> (checked by <see cref="CheckConsistency"/> in debug builds and by the tests):</para>
/// <list type="bullet">
/// <item>per slab: in use = Objects − FreeCount − RemoteCount − (its owner's tier-1 objects, if it is a current slab);
/// a floating slab has FreeCount = RemoteCount = 0; a current slab has FreeCount = 0.</item>
/// <item>per node: NrSlabs = slabs of the node in any place; TotalObjects = NrSlabs × Objects;
/// FreeObjects = Σ FreeCount over the node's partial slabs.</item>
/// <item>after a drain (<see cref="Shrink"/>): <see cref="ActiveObjects"/> = objects handed out and not freed.</item>
/// </list>
/// <para>A free object's free pointer decodes to null or to an object of its own slab (every list above is per slab);
/// an allocated object's free pointer word is zeroed when it is handed out, so a free finds a second free of the same
/// object from that word alone (the check a free does anyway before it writes the link). Two threads freeing one
/// object at the same instant can both pass that check; <see cref="SlabAllocatorOptions.SerializedFrees"/> closes that
/// with one atomic per free.</para>
/// </remarks>
public sealed unsafe partial class KmemCache : IDisposable
{
    internal const int WordSize = 8;
    private const int MaxSlabOrder = 3;        // PAGE_ALLOC_COSTLY_ORDER
    private const int MaxLargeSlabOrder = 5;   // kmalloc-32k: four objects in 128 KiB

    private readonly SlabAllocator _owner;
    private readonly PhysicalMemory _memory;
    private readonly PageAllocator _pages;
    private readonly KmemCacheData* _d;
    private readonly SlabConstructor? _ctor;
    private readonly bool _ownsIndex;
    private GCHandle _handle;
    private volatile bool _destroyed;

    internal KmemCache(SlabAllocator owner, string name, int size, int align, SlabFlags flags, SlabConstructor? ctor, int id, int cpuIndex)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, "Object size must be at least 1 byte.");
        if (align < 0 || (align & (align - 1)) != 0 || align > SlabAllocator.KmallocMaxCacheSize)
            throw new ArgumentOutOfRangeException(nameof(align), align, $"Alignment must be 0 or a power of two up to {SlabAllocator.KmallocMaxCacheSize}.");
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
        _d->SerializedFree = owner.Options.SerializedFrees ? 1 : 0;
        (nint arenaBase, nuint arenaBytes) = _memory.FlatRange;
        (nint memMap, _) = _memory.FlatMemMap;
        _d->ArenaBase = (nuint)arenaBase;
        _d->ArenaBytes = arenaBytes;
        _d->MemMap = (PageFrame*)memMap;
        _d->RemoteHints = (byte*)NativeMemory.AllocZeroed(InitialHints);
        _d->HintCapacity = InitialHints;
        _d->Nodes = (KmemCacheNode*)NativeMemory.AlignedAlloc((nuint)(_d->NodeCount * sizeof(KmemCacheNode)), 64);
        NativeMemory.Clear(_d->Nodes, (nuint)(_d->NodeCount * sizeof(KmemCacheNode)));

        _ownsIndex = cpuIndex < 0;
        _d->CpuIndex = cpuIndex >= 0 ? cpuIndex : SlabCpus.AllocateIndices(1);
        _d->LiveKey = SlabCpus.NewKey();
        _d->FastPath = (flags & SlabFlags.Debug) == 0 ? 1 : 0;
        _d->Key = _d->FastPath != 0 && !owner.FailslabActive ? _d->LiveKey : 0;
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

        // The smallest order that wastes at most a sixteenth with enough objects per slab (slub_min_objects), stopping
        // at PAGE_ALLOC_COSTLY_ORDER, or higher for objects above a page so that a slab still holds a few of them.
        bool large = _d->Size > PageFrame.PageSize;
        int maxOrder = large ? MaxLargeSlabOrder : MaxSlabOrder;
        int minObjects = large ? 4 : 8;
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
            if (waste <= 1.0 / 16 && (objects >= minObjects || order == maxOrder)) break;
            if (order >= maxOrder && best >= 0) { order = best; break; }
        }
        if (order > PageAllocator.MaxOrder) order = best;
        if (order < 0) throw new ArgumentOutOfRangeException(nameof(objectSize), objectSize, "Object too large for a slab.");
        _d->Order = order;
        _d->Objects = Math.Min((PageFrame.PageSize << order) / _d->Size, 65535);
        _d->Reciprocal = (uint)((0x1_0000_0000UL + (ulong)_d->Size - 1) / (ulong)_d->Size);
        _d->SlabBytes = (uint)(_d->Objects * _d->Size);
        _d->DivisorMagic = ulong.MaxValue / (ulong)_d->Size + 1;
    }

    /// <summary>Thread context ids a new cache has remote-free hints for (the array grows when a higher id uses it).</summary>
    private const int InitialHints = 64;

    internal static int AlignUp(int value, int align) => (value + align - 1) & ~(align - 1);

    /// <summary>Allocates an object (kmem_cache_alloc). Null on failure, or <see cref="OutOfMemoryException"/> with <see cref="SlabFlags.Panic"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc(Gfp gfp = Gfp.Kernel)
    {
        SlabThreadContext* ctx = SlabCpus.Current;
        KmemCacheData* d = _d;
        void* obj = AllocFast(ctx, d, d->CpuIndex);
        if (obj == null) return AllocSlow(gfp, -1, d->ObjectSize);
        if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear(obj, (nuint)d->ObjectSize);
        return obj;
    }

    /// <summary>Allocates an object from <paramref name="node"/> (kmem_cache_alloc_node).</summary>
    public void* AllocNode(Gfp gfp, int node) => AllocSlow(gfp, node, _d->ObjectSize);

    /// <summary>The allocation fast path: the thread's entry for cache <paramref name="index"/>, or null when the slow path must run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* AllocFast(SlabThreadContext* ctx, KmemCacheData* d, int index)
    {
        if (ctx == null) return null;
        SlabCpu* c = SlabThreadContext.Entry(ctx, index);
        return c != null ? AllocFrom(ctx, c, d) : null;
    }

    /// <summary>
    /// Pops the first object of a thread's <see cref="SlabCpu.Freelist"/> and zeroes its free pointer word (so a later
    /// free does not take it for a free object); null when the list is empty, a drainer holds the context or the next
    /// link does not name an object of the slab (the slow path reports it). A cache the fast paths must not serve has every
    /// thread's list empty (see <see cref="KmemCacheData.Key"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* AllocFrom(SlabThreadContext* ctx, SlabCpu* c, KmemCacheData* d)
    {
        ThreadCacheHeader* h = &ctx->Header;
        Volatile.Write(ref h->Busy, 1);
        void* obj = c->Freelist;
        if (obj != null && Volatile.Read(ref h->DrainRequested) == 0)
        {
            void** location = FreePointerAddress(d, obj);
            void* next = DecodeFreePointer(d, location);
            // Never hand out anything but an object of the slab: a corrupted link is refused here, reported by the slow path.
            if (IsSlot(d, (nuint)next - (nuint)c->SlabBase - (nuint)d->RedLeftPad) || next == null)
            {
                c->Freelist = next;
                *location = null;
                if (SlabStatistics.Enabled) c->AllocFastPath++;
                Volatile.Write(ref h->Busy, 0);
                return obj;
            }
        }
        Volatile.Write(ref h->Busy, 0);
        return null;
    }

    /// <summary>Frees an object of this cache (kmem_cache_free); null is ignored.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(void* obj)
    {
        SlabThreadContext* ctx = SlabCpus.Current;
        if (!FreeFast(ctx, _d, obj)) FreeSlow(obj);
    }

    /// <summary>
    /// The free fast path for an object of the cache <paramref name="d"/>: finds its slab in the flat arena and frees it
    /// to the thread (<see cref="FreeToThread"/>); false, with nothing changed, when the slow path must run.
    /// Everything that reads the arena's metadata runs inside the thread's context, so a <see cref="Destroy"/> or a
    /// dispose, which closes the cache (<see cref="KmemCacheData.Key"/> = 0) and then drains every context, never frees
    /// it under a reader.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool FreeFast(SlabThreadContext* ctx, KmemCacheData* d, void* obj)
    {
        if (ctx == null) return false;
        ThreadCacheHeader* h = &ctx->Header;
        Volatile.Write(ref h->Busy, 1);
        bool done = false;
        if (Volatile.Read(ref h->DrainRequested) == 0 && d->Key != 0)
        {
            nuint flat = (nuint)obj - d->ArenaBase;
            if (flat < d->ArenaBytes)
            {
                PageFrame* slab = HeadFrame(d->MemMap, d->ArenaBytes, flat);
                if (slab != null && (slab->FlagsAndZone & (ulong)PageFlags.Slab) != 0 && slab->Private == (nuint)d)
                    done = FreeToThread(ctx, d, slab, flat - SlabOffsetInArena(d->MemMap, slab), obj);
            }
        }
        Volatile.Write(ref h->Busy, 0);
        return done;
    }

    /// <summary>
    /// The head frame of the page at <paramref name="flat"/> bytes into a flat arena of <paramref name="arenaBytes"/>
    /// (a compound tail's head when it lies in the frame array), or null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageFrame* HeadFrame(PageFrame* memMap, nuint arenaBytes, nuint flat)
    {
        PageFrame* page = memMap + (flat >> PageFrame.PageShift);
        if ((page->FlagsAndZone & (ulong)PageFlags.Tail) == 0) return page;
        var head = (PageFrame*)page->Private;
        return (nuint)head - (nuint)memMap < (arenaBytes >> PageFrame.PageShift) * (nuint)sizeof(PageFrame) ? head : null;
    }

    /// <summary>Bytes from the arena's start to the first byte of <paramref name="slab"/> (frames are 64 bytes: pfn × 4096 = byte offset × 64).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint SlabOffsetInArena(PageFrame* memMap, PageFrame* slab)
        => ((nuint)slab - (nuint)memMap) << (PageFrame.PageShift - PageFrame.SizeShift);

    /// <summary>
    /// Frees <paramref name="obj"/>, at <paramref name="offset"/> bytes into <paramref name="slab"/> (a slab of
    /// <paramref name="d"/>), to the calling thread when the thread owns the slab: onto its own list when the slab is
    /// its current one, else onto the slab's free list. False, with nothing changed, for everything else (not an object
    /// start, already free, another owner or none, serialized frees): the slow path sorts it out. Inside the context.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool FreeToThread(SlabThreadContext* ctx, KmemCacheData* d, PageFrame* slab, nuint offset, void* obj)
    {
        nuint slot = offset - (nuint)d->RedLeftPad;
        if (!IsSlot(d, slot)) return false;
        void** location = FreePointerAddress(d, obj);
        if (LooksFree(d, location, (nuint)obj - slot) || d->SerializedFree != 0) return false;
        SlabCpu* c = SlabThreadContext.Entry(ctx, d->CpuIndex);
        if (c == null) return false;
        if (slab == c->Slab)
        {
            *location = EncodeFreePointer(d, location, c->Freelist);
            c->Freelist = obj;
        }
        else
        {
            if (SlabPage.OwnerWord(SlabPage.ReadState(slab)) != ctx->Id) return false;
            *location = EncodeFreePointer(d, location, SlabPage.Freelist(slab));
            SlabPage.SetFreelist(slab, obj);
            if (slab->MapCount++ == 0) FreedIntoOwnedSlab(c, slab);
        }
        if (SlabStatistics.Enabled) c->FreeFastPath++;
        return true;
    }

    /// <summary>True when <paramref name="slot"/> (bytes from a slab's first object) is the start of an object of the slab: one multiply (Lemire's divisibility test).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsSlot(KmemCacheData* d, nuint slot)
        => (ulong)slot < d->SlabBytes && (ulong)slot * d->DivisorMagic < d->DivisorMagic;

    /// <summary>
    /// True when the free pointer word at <paramref name="location"/> reads as a free object's: it decodes to null or into
    /// the slab whose objects start at <paramref name="firstObject"/>. Handed-out objects have the word zeroed, which
    /// decodes to neither; data a program writes there does by a chance of about one in 2^50 (without the secret).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool LooksFree(KmemCacheData* d, void** location, nuint firstObject)
    {
        void* decoded = DecodeFreePointer(d, location);
        return (nuint)decoded - firstObject < d->SlabBytes || decoded == null;
    }

    /// <summary>Where an object's free pointer lives.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void** FreePointerAddress(KmemCacheData* d, void* obj) => (void**)((byte*)obj + d->Offset);

    /// <summary>The hardened form of a link: next XOR the cache secret XOR the byte-swapped address it is stored at.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* EncodeFreePointer(KmemCacheData* d, void** location, void* next)
        => (void*)((ulong)next ^ d->Random ^ BinaryPrimitives.ReverseEndianness((ulong)location));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* DecodeFreePointer(KmemCacheData* d, void** location)
        => (void*)((ulong)*location ^ d->Random ^ BinaryPrimitives.ReverseEndianness((ulong)location));

    /// <summary>
    /// The calling thread's entry for this cache (<see cref="KmemCacheThread"/>): take it once before a run of
    /// operations on one thread and allocate and free through it without the per-call thread-local read.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache was destroyed.</exception>
    public KmemCacheThread ThisThread()
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        return new KmemCacheThread(this, _d, ctx, EntryFor(ctx));
    }

    /// <summary>True once the cache is destroyed.</summary>
    internal bool IsDestroyed => _destroyed;

    /// <summary>The managed cache of a native cache record (slow paths only).</summary>
    internal static KmemCache FromData(KmemCacheData* d)
        => (KmemCache)(GCHandle.FromIntPtr(d->Handle).Target ?? throw new ObjectDisposedException("kmem_cache"));

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (object {ObjectSize} B, slot {SlotSize} B, {ObjectsPerSlab}/slab, order {Order})";
}
