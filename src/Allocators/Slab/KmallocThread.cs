using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

/// <summary>
/// The calling thread's magazines of the kmalloc caches, resolved once per size class on first use:
/// <see cref="Kmalloc"/> and <see cref="Kfree"/> are <see cref="SlabAllocator.Kmalloc"/> and
/// <see cref="SlabAllocator.Kfree"/> without the per-call thread-local lookup, with the same checks and fallbacks
/// (zeroing, failslab and debug caches go through the plain calls; large kmalloc goes to the thread's page lists,
/// also resolved once).
/// </summary>
/// <remarks>
/// A <c>ref struct</c> that only its own thread can use (see <see cref="KmemCacheThread"/>); keep it in a local and
/// call it there, since the size classes it resolves are remembered in the local. It must not be used after the slab
/// layer is disposed.
/// </remarks>
public unsafe ref struct KmallocThread
{
    // One slot for every value of a slab's kmalloc class bits (SlabPage.KmallocClass), so the class picks its slot with
    // no bounds test; slots past the last class, SlabPage.NoKmallocClass included, hold the always-refusing
    // MagazineCache.Disabled.
    private const int Slots = SlabPage.NoKmallocClass + 1;

    private readonly SlabAllocator _slab;
    private readonly SlabLocator _locator;
    private readonly FaultAttributes _failslab;
    private readonly byte* _sizeIndex;
    private fixed long _magazines[Slots];   // MagazineCache* per class; Unresolved until the class is first used
    private ThreadCacheHeader* _pcp;        // the thread's page lists, for large kmalloc; resolved on first use

    /// <summary>The stand-in for a class not used yet through this handle: refuses like a drained cache, and the handle's slow path resolves it.</summary>
    private static readonly MagazineCache* Unresolved = MagazineCache.CreateRefusing();

    internal KmallocThread(SlabAllocator slab)
    {
        _slab = slab;
        _locator = new SlabLocator(slab.Pages.Memory);
        _failslab = slab.Failslab;
        _sizeIndex = slab.SizeIndex;
        int classes = slab.KmallocCaches.Count;
        for (int i = 0; i < Slots; i++)
            _magazines[i] = (long)(i < classes ? Unresolved : MagazineCache.Disabled);
    }

    /// <summary>Allocates <paramref name="size"/> bytes (kmalloc); null on failure, <see cref="SlabAllocator.ZeroSizePointer"/> for 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Kmalloc(nuint size, Gfp gfp = Gfp.Kernel)
    {
        if (ServesFromMagazines(size, gfp))
        {
            void* obj = KmemCache.PopThreadCache((MagazineCache*)_magazines[KmallocClassTable.ClassOf(_sizeIndex, size)]);
            if (obj != null) return obj;
        }
        return KmallocSlow(size, gfp);
    }

    /// <summary>Frees memory from kmalloc (kfree); null and <see cref="SlabAllocator.ZeroSizePointer"/> are ignored. Misuse throws as <see cref="SlabAllocator.Kfree"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Kfree(void* p)
    {
        SlabAddress a = _locator.Find(p);
        if (KmemCache.FreeToMagazine((MagazineCache*)_magazines[SlabPage.KmallocClass(a.Slab)], SlabPage.Cache(a.Slab), a.Slab, a.Offset, p)) return;
        KfreeSlow(p, a);
    }

    /// <summary>True when a request can come from a kmalloc cache's magazines (not large, not zeroed, no failslab).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly bool ServesFromMagazines(nuint size, Gfp gfp)
        => size - 1 < SlabAllocator.KmallocMaxCacheSize && (gfp & Gfp.Zero) == 0 && !_failslab.Enabled;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* KmallocSlow(nuint size, Gfp gfp)
    {
        if (ServesFromMagazines(size, gfp))
        {
            int index = KmallocClassTable.ClassOf(_sizeIndex, size);
            if (_magazines[index] == (long)Unresolved)
            {
                void* obj = KmemCache.PopThreadCache(Resolve(index));
                if (obj != null) return obj;
            }
        }
        if (SlabAllocator.IsLargeKmallocSize(size))
            return _slab.LargeKmallocAddress(_slab.Pages.AllocPagesThrough(Pcp, gfp | Gfp.Comp, SlabAllocator.LargeKmallocOrder(size)));
        return _slab.Kmalloc(size, gfp);
    }

    private ThreadCacheHeader* Pcp => _pcp != null ? _pcp : (_pcp = _slab.Pages.ThisThreadCache());

    // A class not resolved yet; a large kmalloc (to the thread's page lists); else null, a sparse arena, misuse
    // (reported there, before anything changes), a full magazine or a drain: the plain call.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void KfreeSlow(void* p, SlabAddress a)
    {
        int slot = SlabPage.KmallocClass(a.Slab);
        if (_magazines[slot] == (long)Unresolved && KmemCache.FreeToMagazine(Resolve(slot), SlabPage.Cache(a.Slab), a.Slab, a.Offset, p)) return;
        if (a.Slab == SlabLocator.NotASlab && _slab.IsLargeKmalloc(p, out PageFrame* head))
        {
            _slab.FreeLargeKmalloc(p, head, Pcp);
            return;
        }
        _slab.Kfree(p);
    }

    private MagazineCache* Resolve(int index)
    {
        MagazineCache* mc = _slab.KmallocCaches[index].ThisThreadMagazines();
        _magazines[index] = (long)mc;
        return mc;
    }
}
