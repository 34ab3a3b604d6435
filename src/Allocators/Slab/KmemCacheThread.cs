using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>
/// The calling thread's own magazines of one <see cref="KmemCache"/>, resolved once (like <c>this_cpu_ptr(s->cpu_slab)</c>
/// taken before a loop): <see cref="Alloc()"/> and <see cref="Free"/> skip the thread-local lookup that
/// <see cref="KmemCache.Alloc(Gfp)"/> and <see cref="KmemCache.Free"/> pay on every call, and are otherwise the same
/// operations with the same checks and the same fallbacks.
/// </summary>
/// <remarks>
/// A <c>ref struct</c>: it lives on the stack of the thread that took it and cannot be stored in a field, captured by a
/// lambda or carried across an <c>await</c>, so it is only ever used by its own thread. Take it with
/// <see cref="KmemCache.ThisThread"/> where a thread does a run of operations; it must not be used after the cache is
/// destroyed. Drains from other threads (shrink, memory pressure) stay safe: each operation enters the thread cache
/// exactly as the plain calls do.
/// </remarks>
public readonly unsafe ref struct KmemCacheThread
{
    private readonly KmemCache _cache;
    private readonly KmemCacheData* _d;
    private readonly MagazineCache* _mc;
    private readonly SlabLocator _locator;
    private readonly FaultAttributes _failslab;

    internal KmemCacheThread(KmemCache cache, KmemCacheData* d, MagazineCache* mc, PhysicalMemory memory, FaultAttributes failslab)
    {
        _cache = cache;
        _d = d;
        _mc = mc;
        _locator = new SlabLocator(memory);
        _failslab = failslab;
    }

    /// <summary>The cache.</summary>
    public KmemCache Cache => _cache;

    /// <summary>Allocates one object (kmem_cache_alloc); null when memory runs out (or throws for a Panic cache).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc()
    {
        if (!_failslab.Enabled && !_cache.IsDestroyed)
        {
            void* obj = KmemCache.PopThreadCache(_mc);
            if (obj != null) return obj;
        }
        return _cache.Alloc();
    }

    /// <summary>Allocates one object with <paramref name="gfp"/> (e.g. <see cref="Gfp.Zero"/>).</summary>
    public void* Alloc(Gfp gfp)
    {
        if ((gfp & Gfp.Zero) != 0) return _cache.Alloc(gfp);
        return Alloc();
    }

    /// <summary>Frees an object of this cache (kmem_cache_free); null is ignored. Misuse throws as <see cref="KmemCache.Free"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(void* obj)
    {
        // A destroyed cache has no slabs left (Destroy refuses while objects live), so the owner test also keeps a
        // use after Destroy away from the freed magazines.
        SlabAddress a = _locator.Find(obj);
        if (a.Slab->Private == (nuint)_d && KmemCache.FreeToMagazine(_mc, _d, a.Slab, a.Offset, obj)) return;
        // Null, a sparse arena, misuse (reported there), a full magazine or a drain: the plain call sorts it out.
        _cache.Free(obj);
    }
}

/// <summary>The typed face of <see cref="KmemCacheThread"/>: the calling thread's magazines of a <see cref="KmemCache{T}"/>.</summary>
public readonly unsafe ref struct KmemCacheThread<T> where T : unmanaged
{
    private readonly KmemCacheThread _inner;

    internal KmemCacheThread(KmemCacheThread inner) => _inner = inner;

    /// <summary>Allocates one object; throws <see cref="OutOfMemoryException"/> when memory runs out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Alloc()
    {
        void* p = _inner.Alloc();
        if (p == null) ThrowOutOfMemory(_inner.Cache);
        return (T*)p;
    }

    /// <summary>Frees an object of this cache.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(T* obj) => _inner.Free(obj);

    private static void ThrowOutOfMemory(KmemCache cache) => throw new OutOfMemoryException($"kmem_cache_alloc({cache.Name}): out of memory.");
}
