using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>
/// The calling thread's magazines of the kmalloc caches, resolved once per size class on first use:
/// <see cref="Kmalloc"/> and <see cref="Kfree"/> are <see cref="SlabAllocator.Kmalloc"/> and
/// <see cref="SlabAllocator.Kfree"/> without the per-call thread-local lookup, with the same checks and fallbacks
/// (large kmalloc, zeroing, failslab and debug caches go through the plain calls).
/// </summary>
/// <remarks>
/// A <c>ref struct</c> that only its own thread can use (see <see cref="KmemCacheThread"/>); keep it in a local and
/// call it there, since the size classes it resolves are remembered in the local. It must not be used after the slab
/// layer is disposed.
/// </remarks>
public unsafe ref struct KmallocThread
{
    private const int Classes = SlabAllocator.KmallocCacheCount;

    private readonly SlabAllocator _slab;
    private readonly SlabLocator _locator;
    private fixed long _magazines[Classes];   // MagazineCache* per size class, 0 until first use

    internal KmallocThread(SlabAllocator slab)
    {
        _slab = slab;
        _locator = new SlabLocator(slab.Pages.Memory);
    }

    /// <summary>Allocates <paramref name="size"/> bytes (kmalloc); null on failure, <see cref="SlabAllocator.ZeroSizePointer"/> for 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Kmalloc(nuint size, Gfp gfp = Gfp.Kernel)
    {
        if (size - 1 < SlabAllocator.KmallocMaxCacheSize && (gfp & Gfp.Zero) == 0 && !_slab.FailslabActive)
        {
            void* obj = KmemCache.PopThreadCache(Magazines(SlabAllocator.KmallocIndex(size)));
            if (obj != null) return obj;
        }
        return _slab.Kmalloc(size, gfp);
    }

    /// <summary>Frees memory from kmalloc (kfree); null and <see cref="SlabAllocator.ZeroSizePointer"/> are ignored. Misuse throws as <see cref="SlabAllocator.Kfree"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Kfree(void* p)
    {
        SlabAddress a = _locator.Find(p);
        if (a.Slab != null)
        {
            KmemCacheData* d = SlabPage.Cache(a.Slab);
            int index = d->KmallocIndex;
            if ((uint)index < Classes && KmemCache.FreeToMagazine(Magazines(index), d, a.Slab, a.Offset, p)) return;
        }
        // Null, large kmalloc, a sparse arena, misuse (reported there), a full magazine or a drain: the plain call.
        _slab.Kfree(p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private MagazineCache* Magazines(int index)
    {
        var mc = (MagazineCache*)_magazines[index];
        return mc != null ? mc : Resolve(index);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private MagazineCache* Resolve(int index)
    {
        MagazineCache* mc = _slab.KmallocCaches[index].ThisThreadMagazines();
        _magazines[index] = (long)mc;
        return mc;
    }
}
