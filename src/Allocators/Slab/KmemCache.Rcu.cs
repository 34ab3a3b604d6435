using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>SLAB_TYPESAFE_BY_RCU: an emptied slab's pages are freed after a grace period (discard_slab → call_rcu(rcu_free_slab)).</summary>
public sealed unsafe partial class KmemCache
{
    /// <summary>The RCU handler that frees this cache's discarded slabs; 0 unless <see cref="SlabFlags.TypesafeByRcu"/>.</summary>
    private nint _rcuSlabHandler;

    /// <summary>Gives discarded slabs (already out of the cache's books) back to the page allocator; on the RCU thread.</summary>
    private void FreeSlabsAfterGracePeriod(ReadOnlySpan<nint> slabs)
    {
        foreach (nint slab in slabs) _pages.FreePages((PageFrame*)slab, _d->Order);
    }

    /// <summary>Destroy: waits until every slab discarded so far is freed (the kernel's rcu_barrier in kmem_cache_destroy).</summary>
    private void ReleaseRcuHandler()
    {
        nint handler = _rcuSlabHandler;
        if (handler == 0) return;
        _pages.Rcu.RcuBarrier();
        _pages.Rcu.UnregisterHandler(handler);
        _rcuSlabHandler = 0;
    }
}
