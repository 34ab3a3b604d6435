using System.Runtime.CompilerServices;
using Allocators.PageAlloc;

namespace Allocators.Slab;

/// <summary>
/// The calling thread's entry for one <see cref="KmemCache"/>, resolved once (like <c>this_cpu_ptr(s->cpu_slab)</c>
/// taken before a loop): <see cref="Alloc()"/> and <see cref="Free"/> run the same fast paths as
/// <see cref="KmemCache.Alloc(Gfp)"/> and <see cref="KmemCache.Free"/>, with the same checks and fallbacks, minus the
/// thread-local read those do on every call (which the JIT usually hoists out of a loop anyway).
/// </summary>
/// <remarks>
/// A <c>ref struct</c>: it lives on the stack of the thread that took it and cannot be stored in a field, captured by a
/// lambda or carried across an <c>await</c>, so it is only ever used by its own thread. It must not be used after the
/// cache is destroyed. Drains from other threads (shrink, memory pressure) stay safe: each operation enters the
/// thread's context exactly as the plain calls do.
/// </remarks>
public readonly unsafe ref struct KmemCacheThread
{
    private readonly KmemCache _cache;
    private readonly KmemCacheData* _d;
    private readonly SlabThreadContext* _ctx;
    private readonly SlabCpu* _entry;

    internal KmemCacheThread(KmemCache cache, KmemCacheData* d, SlabThreadContext* ctx, SlabCpu* entry)
    {
        _cache = cache;
        _d = d;
        _ctx = ctx;
        _entry = entry;
    }

    /// <summary>The cache.</summary>
    public KmemCache Cache => _cache;

    /// <summary>Allocates one object (kmem_cache_alloc); null when memory runs out (or throws for a Panic cache).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc()
    {
        void* obj = KmemCache.AllocFrom(_ctx, _entry, _d);
        return obj != null ? obj : _cache.AllocSlowPath(Gfp.Kernel, -1, _d->ObjectSize);
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
        if (!KmemCache.FreeFast(_ctx, _d, obj)) _cache.FreeSlowPath(obj);
    }
}

/// <summary>The typed face of <see cref="KmemCacheThread"/>: the calling thread's entry for a <see cref="KmemCache{T}"/>.</summary>
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
