using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    internal void* AllocSlowPath(Gfp gfp, int node, int requestedSize) => AllocSlow(gfp, node, requestedSize);

    internal void FreeSlowPath(PageFrame* slab, void* obj) => FreeSlow(slab, obj);

    internal void CheckKmallocPointer(PageFrame* slab, void* obj)
    {
        if (ObjectIndex(slab, obj) < 0) ThrowInteriorPointer(slab, obj);
    }

    /// <summary>
    /// Allocates <c>pointers.Length</c> objects (kmem_cache_alloc_bulk). All or nothing: returns the count, or 0 after
    /// giving back what it got when memory ran out.
    /// </summary>
    public int AllocBulk(Gfp gfp, Span<nint> pointers)
    {
        for (int i = 0; i < pointers.Length; i++)
        {
            void* obj = Alloc(gfp);
            if (obj == null)
            {
                FreeBulk(pointers[..i]);
                pointers[..i].Clear();
                return 0;
            }
            pointers[i] = (nint)obj;
        }
        return pointers.Length;
    }

    /// <summary>Frees every non-zero pointer of <paramref name="pointers"/> (kmem_cache_free_bulk).</summary>
    public void FreeBulk(ReadOnlySpan<nint> pointers)
    {
        foreach (nint p in pointers)
        {
            if (p != 0) Free((void*)p);
        }
    }

    /// <summary>The cache's slab and object for an address, or false when it is not one of this cache's objects (virt_to_slab).</summary>
    public bool Owns(void* obj)
    {
        PageFrame* slab = SlabOf(_memory, obj);
        return slab != null && slab->Has(PageFlags.Slab) && slab->Private == (nuint)_d && ObjectIndex(slab, obj) >= 0;
    }

    /// <summary>Drops per-thread state when the whole slab layer goes away with its arena.</summary>
    internal void Abandon()
    {
        if (_destroyed) return;
        _destroyed = true;
        _registry?.Dispose();
        FlushDepot();
        if (_handle.IsAllocated) _handle.Free();
    }
}
