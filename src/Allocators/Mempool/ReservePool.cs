using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Kasan;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Mempool;

/// <summary>Allocates one element for a custom <see cref="ReservePool"/> (mempool_alloc_t); null on failure.</summary>
public unsafe delegate void* ReservePoolAlloc(Gfp gfp);

/// <summary>Frees one element of a custom <see cref="ReservePool"/> (mempool_free_t).</summary>
public unsafe delegate void ReservePoolFree(void* element);

/// <summary>
/// A guaranteed-progress pool (the kernel's mempool): <see cref="Alloc"/> asks the allocator first and falls back to
/// <see cref="MinCount"/> elements reserved at creation, so an I/O path that must make progress under memory pressure
/// can, as long as the elements it takes come back (<see cref="Free"/> refills the reserve before it frees to the
/// allocator). A caller that may block waits for a free when the reserve is empty.
/// </summary>
/// <remarks>
/// <para>Invariants (under <c>_lock</c>, debug-asserted): 0 ≤ _count ≤ _capacity; _count ≤ _minNr except right after a
/// shrinking <see cref="Resize"/> has given the excess back; slots [0, _count) of the native reserve hold distinct
/// elements owned by the pool, and no element is both in the reserve and handed out.</para>
/// <para>Locks: <c>_lock</c> (leaf, a monitor so that waiters can sleep on it) guards the reserve; the allocator is
/// called outside it. The built-in kmalloc, slab and page flavours dispatch on an enum (no delegate per call).</para>
/// <para>With KASAN on, the built-in flavours' reserved elements are poisoned as freed while they wait in the reserve
/// (kasan_mempool_poison_object/pages): a checked access to an element after its <see cref="Free"/> is a use after
/// free, and a second <see cref="Free"/> of an element already in the reserve is reported as a double free and
/// refused.</para>
/// </remarks>
public sealed unsafe class ReservePool : IDisposable
{
    private enum Kind : byte { Custom, Kmalloc, Slab, Page }

    /// <summary>How long one wait for a free lasts before the allocator is tried again (mempool_alloc's 5 s io_schedule_timeout).</summary>
    private const int WaitMilliseconds = 5000;

    private readonly object _lock = new();
    private readonly Kind _kind;
    private readonly SlabAllocator? _slab;
    private readonly KmemCache? _cache;
    private readonly PageAllocator? _pages;
    private readonly nuint _size;   // kmalloc flavour: element size
    private readonly int _order;    // page flavour: page order
    private readonly ReservePoolAlloc? _alloc;
    private readonly ReservePoolFree? _free;
    private readonly KasanShadow? _kasan;   // the arena's shadow for the built-in flavours when KASAN is on
    private readonly nuint _elementBytes;   // what KASAN makes accessible of a handed-out element
    private void** _elements;
    private int _capacity;
    private int _minNr;
    private volatile int _count;
    private int _waiters;
    private bool _disposed;

    private ReservePool(Kind kind, int minNr, SlabAllocator? slab, KmemCache? cache, PageAllocator? pages, nuint size, int order, ReservePoolAlloc? alloc, ReservePoolFree? free)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minNr);
        _kind = kind;
        _slab = slab;
        _cache = cache;
        _pages = pages;
        _size = size;
        _order = order;
        _alloc = alloc;
        _free = free;
        (_kasan, _elementBytes) = kind switch
        {
            Kind.Kmalloc => (slab!.Kasan, size),
            Kind.Slab => (cache!.Owner.Kasan, (nuint)cache.ObjectSize),
            Kind.Page => (pages!.Memory.Kasan, (nuint)PageFrame.PageSize << order),
            _ => ((KasanShadow?)null, (nuint)0),
        };
        _capacity = Math.Max(minNr, 1);
        _elements = (void**)NativeMemory.Alloc((nuint)_capacity, (nuint)sizeof(void*));
        _minNr = minNr;
        // mempool_init: fill the reserve with GFP_KERNEL now; a pool that cannot hold its minimum is not created.
        while (_count < minNr)
        {
            void* e = AllocElement(Gfp.Kernel);
            if (e == null)
            {
                Dispose();
                throw new OutOfMemoryException($"mempool_create: only {_count} of {minNr} reserved elements could be allocated.");
            }
            if (_kasan != null) KasanPoisonElement(e);
            _elements[_count++] = e;
        }
    }

    /// <summary>A pool over custom element functions (mempool_create).</summary>
    public static ReservePool Create(int minNr, ReservePoolAlloc alloc, ReservePoolFree free)
    {
        ArgumentNullException.ThrowIfNull(alloc);
        ArgumentNullException.ThrowIfNull(free);
        return new ReservePool(Kind.Custom, minNr, null, null, null, 0, 0, alloc, free);
    }

    /// <summary>A pool of kmalloc blocks of <paramref name="size"/> bytes (mempool_create_kmalloc_pool).</summary>
    public static ReservePool CreateKmallocPool(SlabAllocator slab, int minNr, nuint size)
    {
        ArgumentNullException.ThrowIfNull(slab);
        ArgumentOutOfRangeException.ThrowIfZero(size);
        return new ReservePool(Kind.Kmalloc, minNr, slab, null, null, size, 0, null, null);
    }

    /// <summary>A pool of objects of <paramref name="cache"/> (mempool_create_slab_pool).</summary>
    public static ReservePool CreateSlabPool(KmemCache cache, int minNr)
    {
        ArgumentNullException.ThrowIfNull(cache);
        return new ReservePool(Kind.Slab, minNr, null, cache, null, 0, 0, null, null);
    }

    /// <summary>A pool of 2^<paramref name="order"/>-page blocks; elements are <see cref="PageFrame"/> pointers (mempool_create_page_pool).</summary>
    public static ReservePool CreatePagePool(PageAllocator pages, int minNr, int order)
    {
        ArgumentNullException.ThrowIfNull(pages);
        ArgumentOutOfRangeException.ThrowIfNegative(order);
        return new ReservePool(Kind.Page, minNr, null, null, pages, 0, order, null, null);
    }

    /// <summary>Elements the reserve must hold (min_nr).</summary>
    public int MinCount { get { lock (_lock) return _minNr; } }

    /// <summary>Elements in the reserve now (curr_nr).</summary>
    public int Count => _count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void* AllocElement(Gfp gfp) => _kind switch
    {
        Kind.Kmalloc => _slab!.Kmalloc(_size, gfp),
        Kind.Slab => _cache!.Alloc(gfp),
        Kind.Page => _pages!.AllocPages(gfp, _order),
        _ => _alloc!(gfp),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeElement(void* element)
    {
        switch (_kind)
        {
            case Kind.Kmalloc: _slab!.Kfree(element); break;
            case Kind.Slab: _cache!.Free(element); break;
            case Kind.Page: _pages!.FreePages((PageFrame*)element, _order); break;
            default: _free!(element); break;
        }
    }

    /// <summary>
    /// Allocates an element (mempool_alloc): from the allocator without waiting or dipping into emergency reserves,
    /// else from the pool's reserve, else (when <paramref name="gfp"/> may block) from the allocator with the caller's
    /// full flags, and then by waiting for a <see cref="Free"/>. So with <see cref="Gfp.DirectReclaim"/> it never
    /// returns null; without it, null once the allocator and the reserve are both empty.
    /// </summary>
    public void* Alloc(Gfp gfp = Gfp.Kernel)
    {
        // The pool is the reserve: the allocator must not use the emergency one, retry hard or warn on its behalf.
        gfp |= Gfp.NoMemAlloc | Gfp.NoRetry | Gfp.NoWarn;
        ObjectDisposedException.ThrowIf(_disposed, this);
        void* e = AllocElement(gfp & ~(Gfp.DirectReclaim | Gfp.Io));
        return e != null ? e : AllocSlow(gfp);
    }

    /// <summary>The allocator failed without reclaim: the reserve, then the caller's full flags, then waiting for a free.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(Gfp gfp)
    {
        bool fullFlags = false;
        while (true)
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_count > 0)
                {
                    void* taken = _elements[--_count];
                    _elements[_count] = null;
                    if (_kasan != null) KasanUnpoisonElement(taken);
                    return taken;
                }
                if (fullFlags && !gfp.AllowsBlocking()) return null;
                if (fullFlags)
                {
                    // Sleep until a Free refills the reserve (it pulses under this lock, so no wakeup is lost).
                    _waiters++;
                    try
                    {
                        Monitor.Wait(_lock, WaitMilliseconds);
                    }
                    finally
                    {
                        _waiters--;
                    }
                }
            }
            // The reserve is empty: now the allocator may reclaim (and after a wait, it is tried again).
            fullFlags = true;
            void* e = AllocElement(gfp);
            if (e != null) return e;
        }
    }

    /// <summary>
    /// Returns an element (mempool_free): into the reserve while it holds fewer than <see cref="MinCount"/>, waking a
    /// waiter, else to the allocator. Null is ignored.
    /// </summary>
    public void Free(void* element)
    {
        if (element == null) return;
        if (_count < Volatile.Read(ref _minNr))
        {
            lock (_lock)
            {
                if (!_disposed && _count < _minNr)
                {
                    Debug.Assert(_count < _capacity);
                    if (_kasan != null && !KasanPoisonElement(element)) ThrowDoubleFree(element);
                    _elements[_count++] = element;
                    if (_waiters > 0) Monitor.PulseAll(_lock);
                    return;
                }
            }
        }
        FreeElement(element);
    }

    /// <summary>
    /// Changes the reserve's size (mempool_resize): shrinking frees the excess elements, growing allocates new ones
    /// with <see cref="Gfp.Kernel"/>. False when not every new element could be allocated: as in the kernel, the new
    /// minimum stands and later frees fill the reserve up to it.
    /// </summary>
    public bool Resize(int newMinNr)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(newMinNr);
        var excess = new List<nint>();
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (newMinNr <= _minNr)
            {
                Volatile.Write(ref _minNr, newMinNr);
                while (_count > newMinNr) excess.Add((nint)_elements[--_count]);
            }
        }
        if (excess.Count > 0 || newMinNr <= MinCount)
        {
            foreach (nint e in excess) FreeReserved((void*)e);
            return true;
        }
        // Grow the array outside the lock, then fill to the new minimum.
        var bigger = (void**)NativeMemory.Alloc((nuint)newMinNr, (nuint)sizeof(void*));
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (newMinNr <= _capacity) NativeMemory.Free(bigger);
            else
            {
                Buffer.MemoryCopy(_elements, bigger, (long)newMinNr * sizeof(void*), (long)_count * sizeof(void*));
                NativeMemory.Free(_elements);
                _elements = bigger;
                _capacity = newMinNr;
            }
            Volatile.Write(ref _minNr, Math.Max(_minNr, newMinNr));
        }
        while (true)
        {
            lock (_lock)
            {
                if (_disposed || _count >= newMinNr) return true;
            }
            void* e = AllocElement(Gfp.Kernel);
            if (e == null) return false;
            Free(e);
        }
    }

    /// <summary>Frees every reserved element and the reserve (mempool_destroy). Elements still handed out are the caller's to <see cref="Free"/> (they go to the allocator).</summary>
    public void Dispose()
    {
        void** elements;
        int count;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            elements = _elements;
            count = _count;
            _elements = null;
            _count = 0;
            Monitor.PulseAll(_lock);
        }
        for (int i = 0; i < count; i++) FreeReserved(elements[i]);
        NativeMemory.Free(elements);
    }

    /// <summary>Frees an element taken out of the reserve to its allocator, which checks a free against the shadow.</summary>
    private void FreeReserved(void* element)
    {
        if (_kasan != null) KasanUnpoisonElement(element);
        FreeElement(element);
    }

    private byte* ElementAddress(void* element) => _kind == Kind.Page ? _pages!.AddressOf((PageFrame*)element) : (byte*)element;

    /// <summary>
    /// An element enters the reserve: poisoned as freed (kasan_mempool_poison_object/pages). False, with nothing
    /// changed, when its first granule is poisoned already: it is in the reserve or freed (a double free).
    /// </summary>
    private bool KasanPoisonElement(void* element)
    {
        byte* p = ElementAddress(element);
        byte code = _kind == Kind.Page ? KasanShadowCode.PageFree : KasanShadowCode.SlabFree;
        if (!_kasan!.TryClaimFree(p, code)) return false;
        _kasan.Poison(p, _elementBytes, code);
        return true;
    }

    /// <summary>An element leaves the reserve: its size accessible again (kasan_mempool_unpoison_object/pages).</summary>
    private void KasanUnpoisonElement(void* element) => _kasan!.Unpoison(ElementAddress(element), _elementBytes);

    private void ThrowDoubleFree(void* element)
    {
        byte* p = ElementAddress(element);
        _kasan!.ReportFree("double-free", p, "mempool_free");
        throw new MemoryCorruptionException($"mempool_free: double free of element 0x{(nuint)p:x}: it is already free (in the pool's reserve or its allocator).", (nuint)p);
    }
}
