using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>Slab cache objects without pointers: typed <see cref="KmemHandle{T}"/> values, or raw bytes as <see cref="NativeBuffer"/> or <see cref="SlabMemoryOwner"/>.</summary>
public static unsafe class KmemCacheExtensions
{
    /// <summary>Allocates one object as a handle with a <c>ref T</c> to it; throws <see cref="OutOfMemoryException"/> when memory runs out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KmemHandle<T> AllocHandle<T>(this KmemCache<T> cache, Gfp gfp = Gfp.Kernel) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        return new KmemHandle<T>(cache, cache.Alloc(gfp));
    }

    /// <summary>Allocates one object as a <see cref="NativeBuffer"/> of <see cref="KmemCache.ObjectSize"/> bytes; throws <see cref="OutOfMemoryException"/> when memory runs out.</summary>
    public static NativeBuffer AllocBuffer(this KmemCache cache, Gfp gfp = Gfp.Kernel)
    {
        ArgumentNullException.ThrowIfNull(cache);
        var p = (byte*)cache.Alloc(gfp);
        if (p == null) SlabMemoryOwner.ThrowOutOfMemory(cache, cache.ObjectSize);
        return new NativeBuffer(cache.Owner, p, cache.ObjectSize);
    }

    /// <summary>Allocates one object as an <see cref="System.Buffers.IMemoryOwner{T}"/> of <see cref="KmemCache.ObjectSize"/> bytes; dispose it to free the object.</summary>
    public static SlabMemoryOwner RentMemory(this KmemCache cache, Gfp gfp = Gfp.Kernel) => SlabMemoryOwner.Rent(cache, gfp);
}
