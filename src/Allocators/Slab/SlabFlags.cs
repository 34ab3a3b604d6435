namespace Allocators.Slab;

/// <summary>Flags of a slab cache (the kernel's SLAB_* creation flags).</summary>
[Flags]
public enum SlabFlags
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>Align objects to the 64-byte cache line (SLAB_HWCACHE_ALIGN).</summary>
    HwCacheAlign = 1 << 0,
    /// <summary>Poison free objects with 0x6b (last byte 0xa5) and new objects with 0x5a (SLAB_POISON).</summary>
    Poison = 1 << 1,
    /// <summary>Red zones around every object: 0xcc while allocated, 0xbb while free (SLAB_RED_ZONE).</summary>
    RedZone = 1 << 2,
    /// <summary>Record who allocated and freed every object (SLAB_STORE_USER).</summary>
    StoreUser = 1 << 3,
    /// <summary>Throw <see cref="OutOfMemoryException"/> instead of returning null (SLAB_PANIC).</summary>
    Panic = 1 << 4,
    /// <summary>Never merge this cache with a compatible one (SLAB_NO_MERGE).</summary>
    NoMerge = 1 << 5,
    /// <summary>Full consistency checks on every allocation and free (SLAB_CONSISTENCY_CHECKS).</summary>
    ConsistencyChecks = 1 << 6,
    /// <summary>One of the kmalloc caches (SLAB_KMALLOC).</summary>
    Kmalloc = 1 << 7,

    /// <summary>
    /// Objects may be reused at once, but a slab's pages go back to the page allocator only after an RCU grace period
    /// (SLAB_TYPESAFE_BY_RCU): a lockless reader holding a stale pointer still reads an object of this type, which it
    /// must revalidate (its lock or reference count) before trusting. Such a cache is never merged with another.
    /// </summary>
    TypesafeByRcu = 1 << 8,

    /// <summary>Every debugging flag (the kernel's slub_debug=FZPU).</summary>
    Debug = Poison | RedZone | StoreUser | ConsistencyChecks,
}
