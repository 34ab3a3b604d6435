using System.Runtime.CompilerServices;
using Allocators.PageAlloc;

namespace Allocators.Slab;

/// <summary>
/// The calling thread's slab context, resolved once: <see cref="Kmalloc"/> and <see cref="Kfree"/> are
/// <see cref="SlabAllocator.Kmalloc(nuint, Gfp)"/> and <see cref="SlabAllocator.Kfree(void*)"/> (the same code) minus the thread-local read
/// those do on every call.
/// </summary>
/// <remarks>
/// A <c>ref struct</c> that only its own thread can use (see <see cref="KmemCacheThread"/>). It must not be used after
/// the slab layer is disposed.
/// </remarks>
public readonly unsafe ref struct KmallocThread
{
    private readonly SlabAllocator _slab;
    private readonly SlabThreadContext* _ctx;

    internal KmallocThread(SlabAllocator slab, SlabThreadContext* ctx)
    {
        _slab = slab;
        _ctx = ctx;
    }

    /// <summary>Allocates <paramref name="size"/> bytes (kmalloc); null on failure, <see cref="SlabAllocator.ZeroSizePointer"/> for 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Kmalloc(nuint size, Gfp gfp = Gfp.Kernel) => _slab.Kmalloc(_ctx, size, gfp);

    /// <summary>Frees memory from kmalloc (kfree); null and <see cref="SlabAllocator.ZeroSizePointer"/> are ignored. Misuse throws as <see cref="SlabAllocator.Kfree(void*)"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Kfree(void* p) => _slab.Kfree(_ctx, p);
}
