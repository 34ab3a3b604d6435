using System.Runtime.CompilerServices;
using Allocators.Common;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void* AllocSlowPath(Gfp gfp, int node, int requestedSize) => AllocSlow(gfp, node, requestedSize);

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void FreeSlowPath(void* obj) => FreeSlow(obj);

    /// <summary>The calling thread's entry for this cache, set up (for handles).</summary>
    internal SlabCpu* EntryFor(SlabThreadContext* ctx)
    {
        if (_d->FastPath == 0) return SlabCpu.Refusing;
        if (!ThreadCacheHeader.TryEnter(&ctx->Header)) return SlabCpu.Refusing;
        try
        {
            return EntryOf(ctx);
        }
        finally
        {
            ThreadCacheHeader.Exit(&ctx->Header);
        }
    }

    /// <summary>Refuses a pointer into a slab of this cache that is not a live object's start (krealloc, ksize).</summary>
    internal void CheckLiveObject(PageFrame* slab, void* obj, string function)
    {
        int index = ObjectIndex(slab, obj);
        if (index < 0) ThrowInteriorPointer(slab, obj);
        // An object in KASAN's quarantine is still allocated in its slab's bitmap, but freed.
        if (IsFree(slab, index) || KasanQuarantined(obj))
            throw _pages.ReportMisuse(new MemoryCorruptionException($"{function}({Name}): 0x{(nuint)obj:x} is not allocated (already freed).", (nuint)obj));
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

    /// <summary>True when <paramref name="obj"/> is the start of an object of this cache (allocated or not), from its slab (virt_to_slab).</summary>
    public bool Owns(void* obj)
    {
        if (_owner.Kfence is { } kfence && kfence.Contains(obj)) return kfence.CacheOf(obj) == (nint)_d;
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        Enter(ctx);
        try
        {
            ObjectDisposedException.ThrowIf(_destroyed, this);
            PageFrame* slab = SlabOf(_memory, obj);
            return slab != null && slab->Has(PageFlags.Slab) && slab->Private == (nuint)_d && ObjectIndex(slab, obj) >= 0;
        }
        finally
        {
            Exit(ctx);
        }
    }
}
