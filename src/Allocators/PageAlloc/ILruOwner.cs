using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>What <see cref="ILruOwner.ReclaimPage"/> did with a page (the outcomes of shrink_folio_list).</summary>
internal enum PageReclaim
{
    /// <summary>Removed from its mapping with its references frozen at zero: the caller frees it.</summary>
    Freed,
    /// <summary>Not reclaimable now (busy, or the gfp forbids what it needs): back on the inactive list.</summary>
    Keep,
    /// <summary>In use, or reclaim failed in a way that should leave it alone for a while: to the active list.</summary>
    Activate,
    /// <summary>
    /// Removed from its mapping, but a lockless lookup that began before may still read it: the caller waits for one
    /// RCU grace period for its whole batch (synchronize_rcu), then calls <see cref="ILruOwner.FreezeDeleted"/>.
    /// </summary>
    Deleted,
}

/// <summary>
/// The layer that owns one kind of LRU page — anonymous memory and swap (the MMU), or file pages (the page cache) —
/// as reclaim sees it: the rmap walk that reads and clears the accessed bits, and the per-page work of taking a page
/// away (swap-out or write-back, unmapping, removing it from its cache).
/// </summary>
internal unsafe interface ILruOwner
{
    /// <summary>True when reclaim can do anything with this kind at all (anon: a swap device has room).</summary>
    bool CanReclaim { get; }

    /// <summary>
    /// page_referenced: the number of page-table entries mapping <paramref name="page"/> whose accessed bit was set,
    /// clearing them (with the TLB flushed so the next access sets them again). The page is isolated and locked.
    /// </summary>
    int Referenced(PageFrame* page);

    /// <summary>
    /// The rest of shrink_folio_list for an isolated, locked page that was not referenced: unmap it from every page
    /// table, write it out if dirty (only as <paramref name="gfp"/> allows: __GFP_IO for swap, __GFP_FS for files),
    /// and remove it from its cache. The page stays locked; on <see cref="PageReclaim.Freed"/> its reference count
    /// is frozen at zero.
    /// </summary>
    PageReclaim ReclaimPage(PageFrame* page, Gfp gfp, ReclaimCounters counters);

    /// <summary>
    /// After the grace period that followed <see cref="PageReclaim.Deleted"/>: true when the page's references froze at
    /// zero (the caller frees it); false when a lookup still holds one (the page keeps only the isolation's reference).
    /// </summary>
    bool FreezeDeleted(PageFrame* page);
}
