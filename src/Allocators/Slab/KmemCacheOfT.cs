using System.Runtime.CompilerServices;
using Allocators.PageAlloc;

namespace Allocators.Slab;

/// <summary>
/// A typed slab cache for .NET code: objects of <typeparamref name="T"/> as <c>T*</c> or <c>ref T</c>.
/// Allocation failure throws <see cref="OutOfMemoryException"/>; <see cref="TryAlloc"/> returns null instead.
/// </summary>
public sealed unsafe class KmemCache<T> : IDisposable where T : unmanaged
{
    internal KmemCache(KmemCache cache) => Cache = cache;

    /// <summary>The untyped cache underneath.</summary>
    public KmemCache Cache { get; }

    /// <summary>Allocates one object; throws <see cref="OutOfMemoryException"/> when memory runs out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* Alloc(Gfp gfp = Gfp.Kernel)
    {
        void* p = Cache.Alloc(gfp);
        if (p == null) ThrowOutOfMemory();
        return (T*)p;
    }

    /// <summary>Allocates one object or returns null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T* TryAlloc(Gfp gfp = Gfp.Kernel) => (T*)Cache.Alloc(gfp);

    /// <summary>Frees an object of this cache.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(T* obj) => Cache.Free(obj);

    /// <summary>The calling thread's slabs of this cache, for a run of operations on one thread (see <see cref="KmemCacheThread"/>).</summary>
    public KmemCacheThread<T> ThisThread() => new(Cache.ThisThread());

    /// <summary>Allocates one object and returns a reference to it.</summary>
    public ref T AllocRef(Gfp gfp = Gfp.Kernel) => ref *Alloc(gfp);

    /// <summary>Frees the object <paramref name="value"/> refers to (it must come from <see cref="AllocRef"/> or <see cref="Alloc"/>).</summary>
    public void FreeRef(ref T value) => Free((T*)Unsafe.AsPointer(ref value));

    /// <summary>Destroys the cache (see <see cref="KmemCache.Destroy"/>).</summary>
    public void Dispose() => Cache.Destroy();

    private void ThrowOutOfMemory() => throw new OutOfMemoryException($"kmem_cache_alloc({Cache.Name}): out of memory.");
}
