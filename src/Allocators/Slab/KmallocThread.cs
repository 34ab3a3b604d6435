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
    private const nint NoMagazines = 1;   // the class's cache has no per-thread magazines (debug flags)

    private readonly SlabAllocator _slab;
    private readonly PhysicalMemory _memory;
    private fixed long _magazines[Classes];   // MagazineCache* per size class, 0 until first use

    internal KmallocThread(SlabAllocator slab)
    {
        _slab = slab;
        _memory = slab.Pages.Memory;
    }

    /// <summary>Allocates <paramref name="size"/> bytes (kmalloc); null on failure, <see cref="SlabAllocator.ZeroSizePointer"/> for 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Kmalloc(nuint size, Gfp gfp = Gfp.Kernel)
    {
        if (size - 1 < SlabAllocator.KmallocMaxCacheSize && (gfp & Gfp.Zero) == 0 && !_slab.FailslabActive)
        {
            nint mc = Magazines(SlabAllocator.KmallocIndex(size));
            if (mc > NoMagazines)
            {
                void* obj = KmemCache.PopThreadCache((MagazineCache*)mc);
                if (obj != null) return obj;
            }
        }
        return _slab.Kmalloc(size, gfp);
    }

    /// <summary>Frees memory from kmalloc (kfree); null and <see cref="SlabAllocator.ZeroSizePointer"/> are ignored. Misuse throws as <see cref="SlabAllocator.Kfree"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Kfree(void* p)
    {
        if ((nuint)p > 16)
        {
            PageFrame* slab = KmemCache.SlabOf(_memory, p);
            if (slab != null && (slab->FlagsAndZone & (uint)PageFlags.Slab) != 0)
            {
                KmemCacheData* d = SlabPage.Cache(slab);
                int index = d->KmallocIndex;
                if ((uint)index < Classes)
                {
                    nint mc = Magazines(index);
                    if (mc > NoMagazines && KmemCache.IsFreeableObject(_memory, d, slab, p) && KmemCache.PushThreadCache((MagazineCache*)mc, slab, p)) return;
                }
            }
        }
        _slab.Kfree(p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nint Magazines(int index)
    {
        nint mc = (nint)_magazines[index];
        return mc != 0 ? mc : Resolve(index);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private nint Resolve(int index)
    {
        MagazineCache* mc = _slab.KmallocCaches[index].ThisThreadMagazines();
        nint value = mc != null ? (nint)mc : NoMagazines;
        _magazines[index] = value;
        return value;
    }
}
