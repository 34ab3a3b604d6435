using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

/// <summary>
/// A slab cache of fixed-size objects (the kernel's <c>kmem_cache</c>): slabs are pages from the page allocator, each
/// object's state is a bit in its slab's bitmaps (kept beside the slab's frame, never in the object), and each thread
/// allocates from slabs it owns, as SLUB's CPUs do from their CPU slabs (here per thread, with no lock and no atomic on
/// the fast paths).
/// </summary>
/// <remarks>
/// <para>Thread-safe. Objects may be freed on any thread. Allocation failure returns null unless the cache has
/// <see cref="SlabFlags.Panic"/>. Misuse (double free, foreign, interior or wrong-cache pointer) throws a
/// <see cref="Common.MemoryCorruptionException"/> and changes nothing; corruption found in debug caches is
/// reported (<see cref="Reports"/>) and repaired.</para>
/// <para><b>An object's state</b> is two bits of its slab (<see cref="SlabPage"/>): free in the <i>local</i> bitmap,
/// written by the slab's owner thread (or, when no thread owns the slab, under its node's list lock), and free in the
/// <i>remote</i> bitmap, set by any other thread with one atomic OR and taken into the local bitmap by the owner with
/// one exchange per word. Allocated = neither bit. An allocation clears the lowest local bit of the thread's current
/// word; a free by the owner sets one; neither touches the object's memory. A free that finds either bit already set
/// is a double free, refused whatever the order of the frees; two threads freeing one object at once both pass that
/// test only when one of them owns the slab (<see cref="SlabAllocatorOptions.SerializedFrees"/> sends every free
/// through the atomic OR, and then exactly one succeeds).</para>
/// <para><b>Where a slab can be</b>: a thread's current slab (<see cref="SlabCpu.Slab"/>); on a thread's partial list
/// (<see cref="SlabCpu.Partial"/>: free objects) or full list (<see cref="SlabCpu.Full"/>: none, as far as the thread
/// knows); on its node's partial list (no owner, free objects); or floating: no owner, no list, no free object (SLUB
/// keeps full slabs on no list either; here slabs float when a drain takes them from their thread). A thread keeps every
/// slab it allocated from until a drain, like mimalloc's heaps, so however large its live set its own frees need no
/// atomic and no lock; empty slabs go back when the cache is shrunk (by the shrinkers under memory pressure, the idle
/// trimmer, or a caller). Other threads' frees into a thread's full slabs set a hint byte for that thread
/// (<see cref="KmemCacheData.RemoteHints"/>), which looks through its full list only then. A thread's free into a
/// slab it floated takes it back (one compare-exchange); any other thread's free into a floating slab puts it on its
/// node's list, so a thread that frees what another allocated never collects that thread's slabs. Debug caches keep
/// every slab on a node list and do everything under its lock.</para>
/// <para><b>Locks</b>, outermost first: the thread-context registry's lock (drains) → a node's <c>ListLock</c> (node
/// partial/full lists, <see cref="KmemCacheNode"/> counters, the local bitmaps of slabs no thread owns) → the page
/// allocator's locks. Every slab operation runs inside the calling thread's context
/// (<see cref="ThreadCacheHeader.TryEnter"/>); inside it a thread never waits for the registry lock and never
/// allocates pages (slab growth runs outside it), so a drain can always finish, and a destroy or dispose, which closes
/// the cache and then drains every thread, never frees memory under an operation.</para>
/// <para><b>Invariants</b> (<see cref="CheckConsistency"/>, run by the tests):</para>
/// <list type="bullet">
/// <item>per slab: free objects = popcount(local) + popcount(remote) ≤ Objects; no bit past the last object; a floating
/// slab has none.</item>
/// <item>per node: NrSlabs = the node's slabs wherever they are; TotalObjects = NrSlabs × Objects; FreeObjects =
/// Σ popcount(local) over its partial slabs (each slab's count in <see cref="SlabPage.FreeCount"/>).</item>
/// <item>after a drain (<see cref="Shrink"/>): <see cref="ActiveObjects"/> = objects handed out and not freed.</item>
/// </list>
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
        // A stale reader of a type-safe cache must still find the object's fields, not poison (as calculate_sizes
        // leaves __OBJECT_POISON off for SLAB_TYPESAFE_BY_RCU).
        if ((flags & SlabFlags.TypesafeByRcu) != 0) flags &= ~SlabFlags.Poison;
        _owner = owner;
        _pages = owner.Pages;
        _memory = owner.Pages.Memory;
        _ctor = ctor;
        _kasan = _memory.Kasan;
        Name = name;

        _d = (KmemCacheData*)NativeMemory.AlignedAlloc((nuint)sizeof(KmemCacheData), Threading.CacheLines.Size);
        NativeMemory.Clear(_d, (nuint)sizeof(KmemCacheData));
        _d->Id = id;
        _d->KmallocIndex = -1;
        _d->Flags = (int)flags;
        _d->ObjectSize = size;
        _d->NodeCount = _pages.NodeCount;
        CalculateSizes(size, align, flags, ctor != null);
        _d->MinPartial = Math.Clamp(BitOperations.Log2((uint)_d->Size) / 2, 5, 10);
        _d->SerializedFree = owner.Options.SerializedFrees ? 1 : 0;
        (nint arenaBase, nuint arenaBytes) = _memory.FlatRange;
        (nint memMap, _) = _memory.FlatMemMap;
        _d->ArenaBase = (nuint)arenaBase;
        _d->ArenaBytes = arenaBytes;
        _d->MemMap = (PageFrame*)memMap;
        // In the flat arena a frame's page_ext words sit at a fixed distance from it (both arrays: 64 bytes per page).
        _d->ExtDelta = arenaBytes != 0 ? (nint)((byte*)_memory.FlatExt - (byte*)memMap) : 0;
        _d->BitmapDelta = _d->BitmapInFrame != 0 ? SlabPage.FrameBitmapOffset : _d->ExtDelta;
        _d->RemoteHints = (byte*)NativeMemory.AllocZeroed(InitialHints);
        _d->HintCapacity = InitialHints;
        _d->Nodes = (KmemCacheNode*)NativeMemory.AlignedAlloc((nuint)(_d->NodeCount * sizeof(KmemCacheNode)), Threading.CacheLines.Size);
        NativeMemory.Clear(_d->Nodes, (nuint)(_d->NodeCount * sizeof(KmemCacheNode)));

        _ownsIndex = cpuIndex < 0;
        _d->CpuIndex = cpuIndex >= 0 ? cpuIndex : SlabCpus.AllocateIndices(1);
        _d->LiveKey = SlabCpus.NewKey();
        (_initOnAlloc, _initOnFree, _randomFreelist) = MemInitModes(_memory.Checks, flags, ctor != null);
        _kfenceRate = KfenceRate(ctor != null);
        DrawLockedSampleCountdown();
        _d->FastPath = (flags & SlabFlags.Debug) == 0 && _kasan == null ? 1 : 0;
        _d->Key = _d->FastPath != 0 && !owner.FailslabActive ? _d->LiveKey : 0;
        _handle = GCHandle.Alloc(this, GCHandleType.Weak);
        _d->Handle = GCHandle.ToIntPtr(_handle);
        _d->Name = Common.NativeStrings.Create(name);
        if ((flags & SlabFlags.TypesafeByRcu) != 0) _rcuSlabHandler = _pages.Rcu.RegisterHandler(FreeSlabsAfterGracePeriod);
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

    /// <summary>Bytes of red zone before each object.</summary>
    public int RedLeftPad => _d->RedLeftPad;

    /// <summary>Bytes from the object's start to the end of its right red zone (the kernel's <c>inuse</c>); <see cref="ObjectSize"/> rounded up to a word without red zoning.</summary>
    public int InUseSize => _d->InUse;

    /// <summary>The slab allocator this cache belongs to.</summary>
    public SlabAllocator Owner => _owner;

    internal KmemCacheData* Data => _d;

    /// <summary>
    /// Lays out a slot like SLUB's calculate_sizes: object, right red zone, two tracks, kmalloc's original size, left
    /// red zone, alignment (no free pointer: an object's state is a bit of its slab's bitmaps).
    /// </summary>
    private void CalculateSizes(int objectSize, int align, SlabFlags flags, bool hasCtor)
    {
        int a = Math.Max(align, WordSize);
        if ((flags & SlabFlags.HwCacheAlign) != 0)
        {
            int line = Threading.CacheLines.Size;
            while (objectSize <= line / 2 && line > WordSize) line /= 2;
            a = Math.Max(a, line);
        }
        bool redZone = (flags & SlabFlags.RedZone) != 0;
        bool kasan = _kasan != null;
        bool debugMeta = (flags & (SlabFlags.RedZone | SlabFlags.StoreUser)) != 0 || kasan;
        int size = AlignUp(objectSize, WordSize);
        if (redZone && size == objectSize) size += WordSize;
        if (kasan) size = Math.Max(size, AlignUp(objectSize, WordSize) + _kasan!.RedZone);
        _d->InUse = size;
        _d->TrackOffset = -1;
        _recordsSites = (flags & SlabFlags.StoreUser) != 0 || (kasan && _memory.Checks.KasanStackTrace);
        if ((flags & SlabFlags.StoreUser) != 0 || kasan)
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
        _d->KasanOffset = -1;
        if (kasan)
        {
            _d->KasanOffset = size;
            size += sizeof(Kasan.QuarantineLink);
        }
        // KASAN's left red zone where it is cheap (alignments up to the red zone): elsewhere the previous slot's metadata is one.
        int leftPad = redZone ? AlignUp(WordSize, a) : kasan && a <= _kasan!.RedZone ? AlignUp(_kasan.RedZone, a) : 0;
        _d->RedLeftPad = leftPad;
        // At least MinSlot bytes: a page's extension words hold a bitmap bit for each of at most 256 objects per page.
        _d->Size = AlignUp(Math.Max(size + leftPad, MinSlot), a);
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
        _d->Objects = (PageFrame.PageSize << order) / _d->Size;
        _d->Reciprocal = (uint)((0x1_0000_0000UL + (ulong)_d->Size - 1) / (ulong)_d->Size);
        _d->SlabBytes = (uint)(_d->Objects * _d->Size);
        _d->Words = (_d->Objects + 63) / 64;
        _d->LastWordMask = _d->Objects % 64 == 0 ? ulong.MaxValue : (1UL << (_d->Objects % 64)) - 1;
        _d->BitmapInFrame = _d->Words == 1 ? 1 : 0;
        _d->RemoteDelta = _d->BitmapInFrame != 0 ? SlabPage.FrameRemoteDelta : _d->Words;
        System.Diagnostics.Debug.Assert(2 * _d->Words <= PageFrame.ExtWords << order, "both bitmaps fit the slab's extension words");
    }

    /// <summary>The smallest slot: 16 bytes, so that a page holds at most 256 objects (two 256-bit bitmaps in its 64 extension bytes).</summary>
    internal const int MinSlot = 16;

    /// <summary>Thread context ids a new cache has remote-free hints for (the array grows when a higher id uses it).</summary>
    private const int InitialHints = 64;

    internal static int AlignUp(int value, int align) => (value + align - 1) & ~(align - 1);

    /// <summary>Allocates an object (kmem_cache_alloc). Null on failure, or <see cref="OutOfMemoryException"/> with <see cref="SlabFlags.Panic"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc(Gfp gfp = Gfp.Kernel) => Alloc(SlabCpus.Current, gfp);

    /// <summary>kmem_cache_alloc through the thread context <paramref name="ctx"/> (the calling thread's, or null before its first slow path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void* Alloc(SlabThreadContext* ctx, Gfp gfp)
    {
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
    /// Takes the object the thread freed last (its stack, <see cref="SlabCpu.Stack"/>), else the lowest free object of its
    /// current bitmap word (<see cref="SlabCpu.Word"/>); when that word is empty, the cheap half of the slow path
    /// (<see cref="AllocFromThreadSlabs"/>: the slab's other words, its remote frees, the thread's next slab). Null when
    /// the thread has nothing, or a drainer holds the context. The object's memory is not touched. A cache the fast
    /// paths must not serve has every thread's entry empty (<see cref="KmemCacheData.Key"/>). An entry with checked
    /// modes goes to <see cref="AllocHardened"/>, except KFENCE's count alone when it is a boot parameter, which counts
    /// here (<see cref="CheckedModeOptions.KfenceCountedAtBoot"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* AllocFrom(SlabThreadContext* ctx, SlabCpu* c, KmemCacheData* d)
    {
        ThreadCacheHeader* h = &ctx->Header;
        Volatile.Write(ref h->Busy, 1);
        void* obj = null;
        if (Volatile.Read(ref h->DrainRequested) == 0)
        {
            int n = c->Count - 1;
            // KFENCE's count alone runs inline when it is a boot parameter; every other mode takes the hardened path.
            if (c->Modes != 0
                && !(CheckedModeOptions.KfenceCountedAtBoot && c->Modes == SlabCpu.SampleMode && --c->SampleCountdown > 0))
            {
                obj = AllocHardened(ctx, c, d);
            }
            else if (n >= 0)
            {
                obj = PopStack(c, n);
            }
            else if (c->Word != null)
            {
                ulong* word = c->Word;
                ulong free = *word;
                if (free != 0)
                {
                    *word = free & (free - 1);
                    obj = c->WordBase + (nuint)BitOperations.TrailingZeroCount(free) * (nuint)(uint)d->Size;
                }
                else
                {
                    obj = AllocFromThreadSlabs(c, d);
                }
            }
            if (SlabStatistics.Enabled && obj != null) c->AllocFastPath++;
        }
        Volatile.Write(ref h->Busy, 0);
        return obj;
    }

    /// <summary>Takes entry <paramref name="n"/> (the top) off the thread's stack and clears its object's bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* PopStack(SlabCpu* c, int n)
    {
        long* entry = c->Stack + 2 * n;
        long bit = entry[1];
        c->Count = n;
        var word = (ulong*)((ulong)bit >> SlabCpu.BitShift);
        Debug.Assert((*word & (1UL << (int)bit)) != 0, "an object on the stack is free in its bitmap");
        *word &= ~(1UL << (int)bit);
        return (void*)entry[0];
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

    /// <summary>The local bitmap of a slab of the flat arena (in its frame or its page_ext words: one addition either way).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong* LocalBitmap(KmemCacheData* d, PageFrame* slab) => (ulong*)((byte*)slab + d->BitmapDelta);

    /// <summary>The local bitmap of a slab in a flat or a sparse arena.</summary>
    internal static ulong* LocalBitmapAny(KmemCacheData* d, PageFrame* slab)
        => d->ArenaBytes != 0 ? LocalBitmap(d, slab) : d->BitmapInFrame != 0 ? SlabPage.InFrameLocal(slab) : FromData(d)._memory.ExtOf(slab);

    /// <summary>The page_ext words of a slab's head page in a flat or a sparse arena.</summary>
    internal static ulong* ExtWordsOf(KmemCacheData* d, PageFrame* slab)
        => d->ArenaBytes != 0 ? (ulong*)((byte*)slab + d->ExtDelta) : FromData(d)._memory.ExtOf(slab);

    /// <summary>Where a slab's full-chain link lives: <c>Data0</c>, or the first page_ext word when the bitmaps are in the frame (see <see cref="SlabPage"/>).</summary>
    internal static PageFrame** FullLinkOf(KmemCacheData* d, PageFrame* slab)
        => d->BitmapInFrame != 0 ? (PageFrame**)ExtWordsOf(d, slab) : (PageFrame**)&slab->Data0;

    /// <summary>
    /// Frees <paramref name="obj"/>, at <paramref name="offset"/> bytes into <paramref name="slab"/> (a slab of
    /// <paramref name="d"/> in the flat arena), to the calling thread when the thread owns the slab: one bit set in the
    /// slab's local bitmap, and the object on top of the thread's stack while it has room. False, with nothing changed,
    /// for everything else (not an object start, already free in either bitmap, another owner or none, serialized
    /// frees): the slow path sorts it out. Inside the context.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool FreeToThread(SlabThreadContext* ctx, KmemCacheData* d, PageFrame* slab, nuint offset, void* obj)
    {
        nuint slot = offset - (nuint)d->RedLeftPad;
        uint index = (uint)(((ulong)slot * d->Reciprocal) >> 32);
        if ((ulong)slot >= d->SlabBytes || (nuint)index * (nuint)(uint)d->Size != slot) return false;
        if (SlabPage.OwnerWord(SlabPage.ReadState(slab)) != ctx->Id || d->SerializedFree != 0) return false;
        // The entry before the bitmap: fewer values live across its lookup (no spills).
        SlabCpu* c = SlabThreadContext.Entry(ctx, d->CpuIndex);
        if (c == null) return false;
        ulong* local = LocalBitmap(d, slab) + (index >> 6);
        ulong mask = 1UL << (int)index;
        ulong free = *local;
        if (((free | local[d->RemoteDelta]) & mask) != 0) return false;
        if ((c->Modes & ~(CheckedModeOptions.KfenceCountedAtBoot ? SlabCpu.SampleMode : 0)) != 0)
        {
            FreeHardened(c, d, obj, local, index);
        }
        else
        {
            *local = free | mask;
            PushStack(c, obj, local, index);
        }
        if ((slab->FlagsAndZone & SlabPage.Exhausted) != 0) FreedIntoOwnedSlab(c, slab);
        if (SlabStatistics.Enabled) c->FreeFastPath++;
        return true;
    }

    /// <summary>Puts a freed object, free in bit <paramref name="index"/> (mod 64) of <paramref name="local"/>, on top of the thread's stack while it has room.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PushStack(SlabCpu* c, void* obj, ulong* local, uint index)
    {
        int n = c->Count;
        if (n < SlabCpu.StackCapacity)
        {
            long* entry = c->Stack + 2 * n;
            entry[0] = (long)obj;
            entry[1] = (long)(((ulong)local << SlabCpu.BitShift) | (index & 63));
            c->Count = n + 1;
        }
    }

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
