using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Diagnostics.Tracing;
using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Allocators.Common;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

/// <summary>Tunables of the slab layer.</summary>
public sealed class SlabAllocatorOptions
{
    /// <summary>Debug flags given to every kmalloc cache (like booting with slub_debug=). Default none.</summary>
    public SlabFlags KmallocFlags { get; init; }

    /// <summary>The kmalloc caches' slot sizes: the kernel's (default) or four per power of two.</summary>
    public KmallocSizeClasses KmallocSizeClasses { get; init; }

    /// <summary>
    /// Every free claims its object with one atomic compare-exchange, so that when two threads free the same pointer at
    /// the same time exactly one succeeds and the other gets the double-free exception. Off by default: without it a
    /// double free is still refused whenever the first free has finished (however long ago, on any thread), but two
    /// frees racing within a few nanoseconds of each other can both pass; with it every free takes the slow path and
    /// one locked instruction (about 6 ns on the dev machine, more than a whole fast-path pair).
    /// </summary>
    public bool SerializedFrees { get; init; }

    /// <summary>
    /// Leak reports for the owner objects of <c>Allocators.Managed</c> (<c>SlabMemoryOwner</c>, <c>NativeBufferWriter</c>):
    /// each records its allocation site and is tracked by a finalizer, and one the GC finds dropped without
    /// <c>Dispose</c> is reported through <see cref="SlabAllocator.CorruptionDetected"/> (kmemleak's "unreferenced
    /// object"), its memory left allocated, since a span taken from it may still be in use. Owners are then not
    /// recycled, so every use after dispose and every second dispose is caught. Off by default: owners carry no
    /// finalizer, record nothing and are reused.
    /// </summary>
    public bool TrackOwnerLeaks { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first value out of range.</summary>
    internal void Validate()
    {
        if (!Enum.IsDefined(KmallocSizeClasses))
            throw new ArgumentException(
                $"KmallocSizeClasses must be one of {string.Join(", ", Enum.GetNames<KmallocSizeClasses>())}, was {KmallocSizeClasses}.", nameof(KmallocSizeClasses));
        SlabFlags known = SlabFlags.None;
        foreach (SlabFlags flag in Enum.GetValues<SlabFlags>()) known |= flag;
        if ((KmallocFlags & ~known) != 0)
            throw new ArgumentException($"KmallocFlags has unknown bits 0x{(int)(KmallocFlags & ~known):x}.", nameof(KmallocFlags));
    }
}

/// <summary>
/// The slab layer of a memory system: creates <see cref="KmemCache"/>s and serves the kmalloc family from the
/// caches kmalloc-16 ... kmalloc-32k, larger requests from the page allocator as compound pages ("large kmalloc").
/// </summary>
/// <remarks>
/// Thread-safe. kmalloc of a power-of-two size is aligned to that size. A pointer from kmalloc may be freed on any
/// thread. Failure returns null; misuse throws <see cref="MemoryCorruptionException"/> and changes nothing.
/// </remarks>
public sealed unsafe partial class SlabAllocator : IDisposable
{
    /// <summary>
    /// The largest size served by a kmalloc cache (KMALLOC_MAX_CACHE_SIZE). The kernel's is two pages (8 KiB); here it is
    /// 32 KiB, so requests of 8..32 KiB (a sixth of glibc-thread's) come from a thread's slabs like small ones instead of
    /// setting up and tearing down a compound page each time.
    /// </summary>
    public const int KmallocMaxCacheSize = 32768;

    /// <summary>What kmalloc(0) returns (ZERO_SIZE_PTR): not null, never dereferenceable, kfree ignores it.</summary>
    public static void* ZeroSizePointer => (void*)16;

    private readonly PageAllocator _pages;
    private readonly PhysicalMemory _memory;
    private readonly KmemCache[] _kmalloc;
    private readonly nint* _kmallocData;
    private readonly byte* _sizeIndex;
    private readonly int _kmallocBase;          // cpu index of kmalloc class 0; class i has _kmallocBase + i
    private readonly nuint _arenaBase;          // flat arena (0 and 0 for a sparse one: frees take the general lookup)
    private nuint _arenaBytes;   // 0 once disposed: the fast free's range test then sends every pointer to the slow path
    private readonly PageFrame* _memMap;
    private readonly KmemCacheData** _cacheList = (KmemCacheData**)NativeMemory.AllocZeroed((nuint)sizeof(nint));
    private readonly List<KmemCache> _caches = new();
    private readonly Lock _lock = new();
    private readonly Func<ShrinkControl, long> _shrinker;
    private int _nextId;
    private volatile bool _disposed;

    /// <summary>Builds the slab layer on <paramref name="pages"/> and creates the kmalloc caches.</summary>
    public SlabAllocator(PageAllocator pages, SlabAllocatorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pages);
        _ = SlabStatistics.Enabled; // initialised before any fast path is compiled, so the JIT folds it
        _pages = pages;
        _memory = pages.Memory;
        Options = options ?? new SlabAllocatorOptions();
        Options.Validate();
        int[] sizes = KmallocClassTable.Sizes(Options.KmallocSizeClasses);
        Debug.Assert(sizes.Length <= SlabPage.NoKmallocClass); // a class index must fit a slab's class bits
        _sizeIndex = KmallocClassTable.CreateIndex(sizes);
        _kmalloc = new KmemCache[sizes.Length];
        _kmallocData = (nint*)NativeMemory.AllocZeroed((nuint)sizes.Length, (nuint)sizeof(nint));
        (nint arenaBase, nuint arenaBytes) = _memory.FlatRange;
        _arenaBase = (nuint)arenaBase;
        _arenaBytes = arenaBytes;
        _memMap = (PageFrame*)_memory.FlatMemMap.MemMap;
        _kmallocBase = SlabCpus.AllocateIndices(sizes.Length);
        Failslab.Changed += RekeyCaches;
        for (int i = 0; i < sizes.Length; i++)
        {
            int size = sizes[i];
            int align = BitOperations.IsPow2(size) ? size : 0;
            _kmalloc[i] = CreateCache(KmallocName(size), size, align, SlabFlags.Kmalloc | Options.KmallocFlags, null, _kmallocBase + i);
            _kmallocData[i] = (nint)_kmalloc[i].Data;
            _kmalloc[i].Data->KmallocIndex = i;
        }
        _shrinker = control => Shrink(control.NrToScan);
        pages.RegisterShrinker(_shrinker);
        _kfreeRcuHandler = pages.Rcu.RegisterHandler(KfreeBulk);
        if (_memory.Checks.Kfence)
        {
            Kfence = new Kfence.Kfence(pages, _memory.Checks, SlabCpus.RequestSample);
            Kfence.BugFound += r => OnReport(new SlabReport(r.Cache, "KFENCE: " + r.Problem, r.Address, r.Text));
        }
        _kasan = _memory.Kasan;
        if (_kasan != null) KasanAttach(_kasan);
    }

    /// <summary>The guarded sampling pool (KFENCE), or null when neither <see cref="CheckedModeOptions.KfenceSampleInterval"/> nor <see cref="CheckedModeOptions.KfenceSampleRate"/> is set.</summary>
    public Kfence.Kfence? Kfence { get; }

    /// <summary>Fault injection switched on or off: the fast paths stop (or resume) serving every cache, so each call sees it.</summary>
    private void RekeyCaches()
    {
        foreach (var cache in Caches) cache.Rekey();
    }

    /// <summary>The tunables.</summary>
    public SlabAllocatorOptions Options { get; }

    /// <summary>True once disposed.</summary>
    internal bool IsDisposed => _disposed;

    /// <summary>The page allocator slabs come from.</summary>
    public PageAllocator Pages => _pages;

    /// <summary>Fault injection for slab allocations (failslab); disabled by default.</summary>
    public FaultAttributes Failslab { get; } = new();

    /// <summary>Call sites recorded by StoreUser caches.</summary>
    public CallSiteTable CallSites { get; } = new();

    /// <summary>Raised for every problem any cache reports (red zone, poison, bitmap counts, leaks at destroy).</summary>
    public event Action<SlabReport>? CorruptionDetected;

    internal bool FailslabActive
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Failslab.Enabled;
    }

    /// <summary>Every live cache, kmalloc caches first.</summary>
    public IReadOnlyList<KmemCache> Caches { get { lock (_lock) return _caches.ToArray(); } }

    /// <summary>The kmalloc caches, smallest first.</summary>
    public IReadOnlyList<KmemCache> KmallocCaches => _kmalloc;

    private static string KmallocName(int size) => size % 1024 == 0 ? $"kmalloc-{size / 1024}k" : $"kmalloc-{size}";

    /// <summary>Creates a cache (kmem_cache_create). <paramref name="align"/> 0 means word alignment.</summary>
    public KmemCache CreateCache(string name, int size, int align = 0, SlabFlags flags = SlabFlags.None, SlabConstructor? ctor = null)
        => CreateCache(name, size, align, flags, ctor, -1);

    private KmemCache CreateCache(string name, int size, int align, SlabFlags flags, SlabConstructor? ctor, int cpuIndex)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var cache = new KmemCache(this, name, size, align, flags, ctor, ++_nextId, cpuIndex);
            _caches.Add(cache);
            KmemCacheData* d = cache.Data;
            d->NextCache = *_cacheList;
            if (*_cacheList != null) (*_cacheList)->PrevCache = d;
            *_cacheList = d;
            return cache;
        }
    }

    /// <summary>Creates a typed cache of <typeparamref name="T"/> objects, optionally with a constructor run once per object when its slab is made.</summary>
    public KmemCache<T> CreateCache<T>(string? name = null, SlabFlags flags = SlabFlags.None, SlabConstructor? ctor = null) where T : unmanaged
        => new(CreateCache(name ?? typeof(T).Name, sizeof(T), 0, flags, ctor));

    internal void Remove(KmemCache cache)
    {
        lock (_lock)
        {
            _caches.Remove(cache);
            KmemCacheData* d = cache.Data;
            if (d->PrevCache != null) d->PrevCache->NextCache = d->NextCache; else *_cacheList = d->NextCache;
            if (d->NextCache != null) d->NextCache->PrevCache = d->PrevCache;
            d->NextCache = d->PrevCache = null;
        }
    }

    /// <summary>The cell holding the head of the native cache list (for inspectors).</summary>
    internal KmemCacheData** NativeCacheList => _cacheList;

    internal void OnReport(SlabReport report)
    {
        CorruptionDetected?.Invoke(report);
        if (AllocatorsEventSource.Log.IsEnabled(EventLevel.Error, AllocatorsEventSource.Keywords.Slab))
            AllocatorsEventSource.Log.SlabCorruption(_pages.Id, report.Cache, report.Problem, report.Address, report.Text);
    }

    /// <summary>The kmalloc cache that serves <paramref name="size"/> bytes, or null above <see cref="KmallocMaxCacheSize"/> (kmalloc_slab).</summary>
    public KmemCache? KmallocCache(nuint size) => size == 0 || size > KmallocMaxCacheSize ? null : _kmalloc[KmallocIndex(size)];

    /// <summary>The size-to-class index (<see cref="KmallocClassTable.CreateIndex"/>), for per-thread handles.</summary>
    internal byte* SizeIndex => _sizeIndex;

    /// <summary>The kmalloc class of 1..<see cref="KmallocMaxCacheSize"/> bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int KmallocIndex(nuint size) => KmallocClassTable.ClassOf(_sizeIndex, size);

    /// <summary>Allocates <paramref name="size"/> bytes (kmalloc). Null on failure; <see cref="ZeroSizePointer"/> for 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Kmalloc(nuint size, Gfp gfp = Gfp.Kernel) => Kmalloc(SlabCpus.Current, size, gfp);

    /// <summary>kmalloc through the thread context <paramref name="ctx"/> (the calling thread's, or null before its first slow path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void* Kmalloc(SlabThreadContext* ctx, nuint size, Gfp gfp)
    {
        if (size - 1 < KmallocMaxCacheSize)
        {
            int index = KmallocIndex(size);
            void* obj = KmemCache.AllocFast(ctx, (KmemCacheData*)_kmallocData[index], _kmallocBase + index);
            if (obj != null)
            {
                if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear(obj, size);
                return obj;
            }
            return KmallocSlow(index, size, gfp);
        }
        return KmallocLargeOrZero(size, gfp, -1);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* KmallocSlow(int index, nuint size, Gfp gfp)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _kmalloc[index].AllocSlowPath(gfp, -1, (int)size);
    }

    /// <summary>
    /// The calling thread's slab context (<see cref="KmallocThread"/>): take it once before a run of kmalloc/kfree calls
    /// on one thread to skip the per-call thread-local read.
    /// </summary>
    public KmallocThread ThisThread()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new KmallocThread(this, SlabCpus.GetOrCreateCurrent());
    }

    /// <summary>Allocates zeroed memory (kzalloc).</summary>
    public void* Kzalloc(nuint size, Gfp gfp = Gfp.Kernel) => Kmalloc(size, gfp | Gfp.Zero);

    /// <summary>Allocates a zeroed array of <paramref name="count"/> elements (kcalloc); null when the size overflows.</summary>
    public void* Kcalloc(nuint count, nuint size, Gfp gfp = Gfp.Kernel)
    {
        if (size != 0 && count > nuint.MaxValue / size) return null;
        return Kmalloc(count * size, gfp | Gfp.Zero);
    }

    /// <summary>Allocates from a given node (kmalloc_node).</summary>
    public void* KmallocNode(nuint size, Gfp gfp, int node)
    {
        if (size - 1 < KmallocMaxCacheSize) return _kmalloc[KmallocIndex(size)].AllocSlowPath(gfp, node, (int)size);
        return KmallocLargeOrZero(size, gfp, node);
    }

    private void* KmallocLargeOrZero(nuint size, Gfp gfp, int node)
    {
        if (size == 0) return ZeroSizePointer;
        if (!IsLargeKmallocSize(size)) return null;
        void* p = LargeKmallocAddress(_pages.AllocPagesNode(node, gfp | Gfp.Comp, LargeKmallocOrder(size)));
        if (_kasan != null && p != null) KasanLargeResize(p, size);
        return p;
    }

    /// <summary>The largest kmalloc: a block of MAX_PAGE_ORDER.</summary>
    internal const nuint KmallocMaxSize = (nuint)PageFrame.PageSize << PageAllocator.MaxOrder;

    /// <summary>True for sizes above the kmalloc caches that kmalloc still serves (a compound block up to MAX_PAGE_ORDER).</summary>
    internal static bool IsLargeKmallocSize(nuint size) => size - 1 - KmallocMaxCacheSize < KmallocMaxSize - KmallocMaxCacheSize;

    /// <summary>The order of the compound block a large kmalloc of <paramref name="size"/> bytes takes.</summary>
    internal static int LargeKmallocOrder(nuint size)
        => BitOperations.Log2(BitOperations.RoundUpToPowerOf2((ulong)((size + PageFrame.PageSize - 1) >> PageFrame.PageShift)));

    /// <summary>Marks a new compound block as a large kmalloc and returns its address; null for null.</summary>
    internal void* LargeKmallocAddress(PageFrame* page)
    {
        if (page == null) return null;
        page->FlagsAndZone |= (uint)PageFlags.LargeKmalloc;
        return _pages.AddressOf(page);
    }

    /// <summary>Frees memory from kmalloc (kfree). Null and <see cref="ZeroSizePointer"/> are ignored.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Kfree(void* p) => Kfree(SlabCpus.Current, p);

    /// <summary>
    /// kfree through the thread context <paramref name="ctx"/>: a slab object of the flat arena is freed to the thread
    /// when it owns the slab (<see cref="KmemCache.FreeToThread"/>); everything else takes <see cref="KfreeSlow"/>. The
    /// arena's metadata is read only inside the context, after the disposed test (see <see cref="KmemCache.FreeFast"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Kfree(SlabThreadContext* ctx, void* p)
    {
        if (!KfreeFast(ctx, p)) KfreeSlow(p);
    }

    /// <summary>The fast half of <see cref="Kfree(SlabThreadContext*, void*)"/>: true when the thread took the object; false, with nothing changed, when <see cref="KfreeSlow"/> must run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool KfreeFast(SlabThreadContext* ctx, void* p)
    {
        if (ctx == null) return false;
        ThreadCacheHeader* h = &ctx->Header;
        Volatile.Write(ref h->Busy, 1);
        bool done = false;
        if (Volatile.Read(ref h->DrainRequested) == 0)
        {
            nuint flat = (nuint)p - _arenaBase;
            if (flat < _arenaBytes)
            {
                PageFrame* slab = KmemCache.HeadFrame(_memMap, _arenaBytes, flat);
                // A slab of a cache the fast paths do not serve is owned by no thread: FreeToThread declines it.
                if (slab != null && (slab->FlagsAndZone & (ulong)PageFlags.Slab) != 0)
                    done = KmemCache.FreeToThread(ctx, (KmemCacheData*)slab->Private, slab, flat - KmemCache.SlabOffsetInArena(_memMap, slab), p);
            }
        }
        Volatile.Write(ref h->Busy, 0);
        return done;
    }

    /// <summary>
    /// Zeroes a kmalloc allocation's whole usable size (<see cref="Ksize"/>) and frees it (kfree_sensitive), whatever
    /// the checked modes: for keys and passwords, whose bytes must not outlive them in free memory. Null and
    /// <see cref="ZeroSizePointer"/> are ignored; a pointer that is not a live kmalloc allocation throws as
    /// <see cref="Kfree(void*)"/> does, and nothing is zeroed.
    /// </summary>
    public void KfreeSensitive(void* p) => KfreeSlow(p, sensitive: true);

    /// <summary>
    /// kfree after the fast path declined: null, a sparse arena, a large kmalloc, misuse (reported), or a free the
    /// thread does not own; with <paramref name="sensitive"/>, the valid allocation is zeroed first (kfree_sensitive).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void KfreeSlow(void* p, bool sensitive = false)
    {
        if ((nuint)p <= 16) return;
        if (Kfence is { } kfence && kfence.Contains(p))
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            nint cache = kfence.CacheOf(p);
            bool zero = sensitive || (cache != 0 && KmemCache.FromData((KmemCacheData*)cache).ZeroesOnFree);
            nint owner = kfence.Free(p, "kfree", CallSites.Name(CallSites.Capture()), zero);
            Interlocked.Increment(ref ((KmemCacheData*)owner)->FreeSlowPath);
            return;
        }
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        KmemCache.Enter(ctx);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            PageFrame* page = KmemCache.SlabOf(_memory, p);
            if (page != null && (page->FlagsAndZone & (uint)PageFlags.Slab) != 0)
            {
                KmemCache cache = KmemCache.FromData(SlabPage.Cache(page));
                if (sensitive) cache.ZeroForKfreeSensitive(page, p);
                cache.FreeChecked(ctx, page, p);
                return;
            }
            if (!IsLargeKmallocStart(p, page)) ThrowBadKfree(p, page);
            if (sensitive) NativeMemory.Clear(p, (nuint)PageFrame.PageSize << page->Order);
            if (_kasan != null)
            {
                KasanQuarantineLarge(p, page);
                return;
            }
            FreeLargeKmalloc(p, page, null);
        }
        finally
        {
            KmemCache.Exit(ctx);
        }
    }

    /// <summary>True when <paramref name="p"/> starts a live large kmalloc block; <paramref name="head"/> is its head frame.</summary>
    internal bool IsLargeKmalloc(void* p, out PageFrame* head)
    {
        head = (nuint)p > 16 ? KmemCache.SlabOf(_memory, p) : null;
        return IsLargeKmallocStart(p, head);
    }

    /// <summary>True when <paramref name="page"/> (the head frame of the page holding <paramref name="p"/>, or null) is a live large kmalloc block starting at <paramref name="p"/>.</summary>
    private bool IsLargeKmallocStart(void* p, PageFrame* page)
        => page != null && (page->FlagsAndZone & (uint)(PageFlags.LargeKmalloc | PageFlags.Allocated)) == (uint)(PageFlags.LargeKmalloc | PageFlags.Allocated)
            && _pages.AddressOf(page) == p;

    /// <summary>
    /// Frees a checked large kmalloc block, through the calling thread's page lists <paramref name="pcp"/> when given;
    /// when the page allocator refuses it (a corrupted tail) the block stays a large kmalloc and the exception names <paramref name="p"/>.
    /// </summary>
    internal void FreeLargeKmalloc(void* p, PageFrame* head, ThreadCacheHeader* pcp)
    {
        head->FlagsAndZone &= ~(ulong)(uint)PageFlags.LargeKmalloc;
        try
        {
            _pages.FreePages(head, head->Order, pcp);
        }
        catch (BadPageException e)
        {
            head->FlagsAndZone |= (uint)PageFlags.LargeKmalloc;
            throw new BadPageException($"kfree: 0x{(nuint)p:x}: {e.Message}", e.Pfn, e.PageState, (nuint)p);
        }
    }

    /// <summary>Throws, naming <paramref name="p"/> and what is wrong with it, for a kfree of what is not the start of a live large kmalloc block.</summary>
    [DoesNotReturn]
    private void ThrowBadKfree(void* p, PageFrame* page)
    {
        if (page == null)
            throw _pages.ReportMisuse(new MemoryCorruptionException($"kfree: 0x{(nuint)p:x} is not in the arena (not from kmalloc).", (nuint)p));
        _pages.InitFrame(page);
        if ((page->FlagsAndZone & (uint)PageFlags.LargeKmalloc) == 0 || !page->Has(PageFlags.Allocated))
            throw _pages.ReportMisuse(new BadPageException($"kfree: 0x{(nuint)p:x} was not allocated by kmalloc or was already freed (page pfn 0x{page->Pfn:x}: {page->Describe()}).",
                page->Pfn, page->Describe(), (nuint)p));
        // A live large kmalloc that does not start at p (the caller knows it is not one that does).
        throw _pages.ReportMisuse(new BadPageException($"kfree: 0x{(nuint)p:x} is an interior pointer into a large kmalloc block at 0x{(nuint)_pages.AddressOf(page):x}.",
            page->Pfn, page->Describe(), (nuint)p));
    }

    /// <summary>Frees every non-zero pointer of <paramref name="pointers"/> (kfree_bulk).</summary>
    public void KfreeBulk(ReadOnlySpan<nint> pointers)
    {
        foreach (nint p in pointers) Kfree((void*)p);
    }

    /// <summary>Usable size of a kmalloc allocation (ksize): the slot's object size, or the large block's size.</summary>
    public nuint Ksize(void* p)
    {
        if ((nuint)p <= 16) return 0;
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        KmemCache.Enter(ctx);
        try
        {
            if (_kasan == null) return KsizeInside(p, out _);
            _kasan.Check(p, 1, write: false, "ksize");
            nuint size = KsizeInside(p, out _);
            _kasan.Unpoison(p, size);
            return size;
        }
        finally
        {
            KmemCache.Exit(ctx);
        }
    }

    /// <summary>ksize inside the thread's context; <paramref name="page"/> is the head frame.</summary>
    private nuint KsizeInside(void* p, out PageFrame* page)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Kfence is { } kfence && kfence.Contains(p))
        {
            page = null;
            return kfence.Size(p, "ksize");
        }
        page = KmemCache.SlabOf(_memory, p);
        if (page != null && page->Has(PageFlags.Slab))
        {
            KmemCache cache = KmemCache.FromData(SlabPage.Cache(page));
            cache.CheckLiveObject(page, p, "ksize");
            return (nuint)cache.ObjectSize;
        }
        if (page != null && page->Has(PageFlags.LargeKmalloc)) return (nuint)PageFrame.PageSize << page->Order;
        throw _pages.ReportMisuse(new MemoryCorruptionException($"ksize: 0x{(nuint)p:x} was not allocated by kmalloc.", (nuint)p));
    }

    /// <summary>
    /// Resizes a kmalloc allocation (krealloc): in place while the new size fits the slot (red-zoning or zeroing the
    /// tail as SLUB does), otherwise by allocate, copy and free. On failure the old block is untouched and null is returned.
    /// </summary>
    public void* Krealloc(void* p, nuint newSize, Gfp gfp = Gfp.Kernel)
    {
        if ((nuint)p <= 16) return Kmalloc(newSize, gfp);
        if (newSize == 0)
        {
            Kfree(p);
            return ZeroSizePointer;
        }
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        nuint keep;
        KmemCache.Enter(ctx);
        try
        {
            _kasan?.Check(p, 1, write: false, "krealloc");
            nuint size = KsizeInside(p, out PageFrame* page);
            if (page == null)
            {
                keep = size; // a KFENCE object: never resized in place, so the new size gets its own bounds
            }
            else if (page->Has(PageFlags.Slab))
            {
                KmemCache cache = KmemCache.FromData(SlabPage.Cache(page));
                int old = cache.OriginalSize(p);
                if (newSize <= size)
                {
                    cache.ResizeInPlace(p, old, (int)newSize, (gfp & Gfp.Zero) != 0);
                    return p;
                }
                keep = (nuint)old;
            }
            else
            {
                if (_pages.AddressOf(page) != p) // KsizeInside accepted it, so page is a large kmalloc head
                    throw _pages.ReportMisuse(new BadPageException($"krealloc: 0x{(nuint)p:x} is an interior pointer into a large kmalloc block at 0x{(nuint)_pages.AddressOf(page):x}.",
                        page->Pfn, page->Describe(), (nuint)p));
                if (newSize <= size)
                {
                    if (_kasan != null) KasanLargeResize(p, newSize);
                    return p;
                }
                // The requested size of a large kmalloc is not kept: the whole block moves, so KASAN sees it as ksize would.
                _kasan?.Unpoison(p, size);
                keep = size;
            }
        }
        finally
        {
            KmemCache.Exit(ctx);
        }
        void* fresh = Kmalloc(newSize, gfp);
        if (fresh == null) return null;
        KmemCache.Enter(ctx);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _kasan?.Check(p, Math.Min(keep, newSize), write: false, "krealloc");
            Buffer.MemoryCopy(p, fresh, (long)newSize, (long)Math.Min(keep, newSize));
        }
        finally
        {
            KmemCache.Exit(ctx);
        }
        try
        {
            Kfree(p);
        }
        catch
        {
            // p was freed by another thread meanwhile: the caller keeps nothing new.
            Kfree(fresh);
            throw;
        }
        return fresh;
    }

    /// <summary>Shrinks every cache (drop_caches for slabs); returns the pages given back.</summary>
    public long ShrinkAll() => Shrink(long.MaxValue);

    /// <summary>Shrinks caches in turn until at least <paramref name="pages"/> pages went back (the shrinker's budget).</summary>
    private long Shrink(long pages)
    {
        // KASAN's quarantine holds freed objects and large kmallocs back: memory pressure and drop_caches take them first.
        _kasan?.Quarantine.Flush();
        long freed = 0;
        foreach (var cache in Caches)
        {
            if (freed >= pages) break;
            freed += cache.Shrink();
        }
        return freed;
    }

    /// <summary>All caches exactly in /proc/slabinfo 2.1 format.</summary>
    public string SlabInfo()
    {
        var sb = new StringBuilder(SlabInfoFormat.Header);
        foreach (var cache in Caches) sb.Append(cache.SlabInfoLine()).Append('\n');
        return sb.ToString();
    }

    /// <summary>
    /// Closes the slab layer: every cache stops serving (calls from here on throw <see cref="ObjectDisposedException"/>),
    /// every thread's entries for its caches are reset with in-flight operations waited for. Objects still allocated
    /// are abandoned with the arena.
    /// </summary>
    public void Dispose()
    {
        if (!_disposed) ShutRcu();
        if (!_disposed) _kasan?.Quarantine.Close();
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            Volatile.Write(ref _arenaBytes, 0); // the drains below wait out frees that read it before
        }
        _pages.UnregisterShrinker(_shrinker);
        Failslab.Changed -= RekeyCaches;
        Kfence?.Dispose();
        KmemCache[] caches = Caches.ToArray();
        foreach (var cache in caches) cache.Shut();
        SlabCpus.RetireIndices(caches.Where(c => c.Data->FastPath != 0).Select(c => c.CpuIndex).ToArray(), flush: false);
        foreach (var cache in caches) cache.ReleaseIndex();
        SlabCpus.FreeIndices(_kmallocBase, _kmalloc.Length);
    }

    /// <summary>
    /// The size index and class table stay until nothing can reach them (a call racing a dispose may still read them);
    /// never freed without a dispose, as threads' slab contexts may still point at the kmalloc caches' records.
    /// </summary>
    ~SlabAllocator()
    {
        if (!_disposed) return;
        NativeMemory.Free(_kmallocData);
        NativeMemory.Free(_sizeIndex);
    }

    internal string Describe(int cacheId) => string.Create(CultureInfo.InvariantCulture, $"cache #{cacheId}");
}
