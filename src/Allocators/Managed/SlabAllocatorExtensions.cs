using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>kmalloc without pointers: buffers as <see cref="NativeBuffer"/> values or <see cref="SlabMemoryOwner"/> objects.</summary>
public static unsafe class SlabAllocatorExtensions
{
    /// <summary>
    /// Allocates <paramref name="length"/> bytes (kmalloc; up to 4 MiB) as a <see cref="NativeBuffer"/>; free it with
    /// <see cref="NativeBuffer.Free"/>. Throws <see cref="OutOfMemoryException"/> when memory runs out.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static NativeBuffer AllocBuffer(this SlabAllocator slab, int length, Gfp gfp = Gfp.Kernel)
    {
        if (slab is null || length < 0) SlabMemoryOwner.ThrowBadRent(slab, length);
        var p = (byte*)slab.Kmalloc((nuint)length, gfp);
        if (p == null) SlabMemoryOwner.ThrowOutOfMemory(null, length);
        return new NativeBuffer(slab, p, length);
    }

    /// <summary>
    /// Allocates <paramref name="length"/> bytes (kmalloc; up to 4 MiB) as an <see cref="System.Buffers.IMemoryOwner{T}"/>;
    /// dispose it to free them. Throws <see cref="OutOfMemoryException"/> when memory runs out.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SlabMemoryOwner RentMemory(this SlabAllocator slab, int length, Gfp gfp = Gfp.Kernel) => SlabMemoryOwner.Rent(slab, length, gfp);
}
