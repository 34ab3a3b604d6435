using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Swap;

/// <summary>
/// The swap cache (mm/swap_state.c): the page of each swap slot that is being written out, read in, or still shared
/// between the slot and memory, so a slot's data is never read twice and a page being written is found by a fault.
/// One native radix tree per swap type, keyed by slot offset; a cached page has PG_swapcache and its entry in
/// <see cref="PageFrame.Data1"/>, and the cache holds one reference to it.
/// </summary>
/// <remarks>
/// <para>Locks: <c>_lock</c> (the swap address space's i_pages lock) guards the trees and every page's
/// PG_swapcache/<c>Data1</c>; it is taken alone, under the page lock and the ptl at most, and nothing is called
/// with it held. A lookup takes its reference under it, and removal freezes the count under it, so no lookup can
/// reach a page being freed.</para>
/// <para>Invariants: <c>Pages = Σ entries in the trees</c>; a page is in the tree of its entry's type at its offset
/// iff it has PG_swapcache; the slot of every cached page has its SWAP_HAS_CACHE bit set.</para>
/// </remarks>
internal sealed unsafe class SwapCache : IDisposable
{
    private readonly Lock _lock = new();
    private readonly PageTree?[] _trees = new PageTree?[SwapEntry.MaxSwapFiles];
    private long _pages;

    /// <summary>Pages in the cache (meminfo SwapCached).</summary>
    public long Pages => Volatile.Read(ref _pages);

    /// <summary>The entry a cached page belongs to (folio->swap).</summary>
    public static SwapEntry EntryOf(PageFrame* page)
        => new((int)(page->Data1 >> 58), page->Data1 & SwapEntry.MaxOffset);

    /// <summary>swap_cache_get_folio: the page cached for <paramref name="entry"/> with a reference taken, or null.</summary>
    public PageFrame* Lookup(SwapEntry entry) => Lookup(entry, out _);

    /// <summary>
    /// <see cref="Lookup(SwapEntry)"/>, and when no page is cached, the shadow its last page left at eviction (0 for
    /// none): a value entry, as the kernel's xarray keeps them, with the low bit set so it is never a frame pointer.
    /// </summary>
    public PageFrame* Lookup(SwapEntry entry, out ulong shadow)
    {
        lock (_lock)
        {
            ulong raw = _trees[entry.Type]?.LookupEntry(entry.Offset) ?? 0;
            shadow = 0;
            if (PageTree.IsValue(raw))
            {
                shadow = raw;
                return null;
            }
            var page = (PageFrame*)raw;
            if (page != null) Interlocked.Increment(ref page->_refcount);
            return page;
        }
    }

    /// <summary>Shadow entries in the trees (workingset_nodes' share here).</summary>
    public long Shadows => Volatile.Read(ref _shadows);

    private long _shadows;

    /// <summary>
    /// add_to_swap_cache: caches the locked <paramref name="page"/> for <paramref name="entry"/> (whose slot has
    /// SWAP_HAS_CACHE set by the caller), taking the cache's reference. False when the offset is taken.
    /// </summary>
    public bool Add(PageFrame* page, SwapEntry entry)
    {
        lock (_lock)
        {
            PageTree tree = _trees[entry.Type] ??= new PageTree();
            if (!tree.Insert(entry.Offset, (ulong)page, out ulong replaced)) return false;
            if (replaced != 0) _shadows--; // the refaulting page took its shadow's place
            page->Data1 = entry.Value;
            PageFrame.SetFlags(page, PageFlags.SwapCache);
            Interlocked.Increment(ref page->_refcount);
            _pages++;
            return true;
        }
    }

    /// <summary>
    /// __delete_from_swap_cache for a page the caller holds a reference to and has locked: leaves the cache and
    /// drops the cache's reference (never the last). The caller clears SWAP_HAS_CACHE (put_swap_folio).
    /// </summary>
    public void Delete(PageFrame* page, SwapEntry entry)
    {
        lock (_lock)
        {
            Unlink(page, entry);
            Interlocked.Decrement(ref page->_refcount);
        }
    }

    /// <summary>
    /// __remove_mapping for reclaim: when exactly <paramref name="expectedRefs"/> references are left (the
    /// isolation's and the cache's) and nothing maps the page, freezes the count at zero and takes the page out of
    /// the cache. False, with nothing changed, otherwise.
    /// </summary>
    public bool RemoveFrozen(PageFrame* page, SwapEntry entry, int expectedRefs, ulong shadow = 0)
    {
        lock (_lock)
        {
            if (Volatile.Read(ref page->_mapcount) != 0) return false;
            if (Interlocked.CompareExchange(ref page->_refcount, 0, expectedRefs) != expectedRefs) return false;
            Unlink(page, entry);
            if (shadow != 0 && _trees[entry.Type]!.Insert(entry.Offset, shadow, out _)) _shadows++;
            return true;
        }
    }

    /// <summary>clear_shadow_from_swap_cache: the slot was freed, so its shadow means nothing any more.</summary>
    public void ClearShadow(SwapEntry entry)
    {
        lock (_lock)
        {
            PageTree? tree = _trees[entry.Type];
            if (tree == null || !PageTree.IsValue(tree.LookupEntry(entry.Offset))) return;
            tree.Delete(entry.Offset);
            _shadows--;
        }
    }

    private void Unlink(PageFrame* page, SwapEntry entry)
    {
        PageFrame* removed = _trees[entry.Type]!.Delete(entry.Offset);
        if (removed != page)
            throw new InvalidOperationException($"swap cache: {entry} holds pfn 0x{(removed == null ? 0 : removed->Pfn):x}, not pfn 0x{page->Pfn:x}.");
        PageFrame.ClearFlags(page, PageFlags.SwapCache);
        page->Data1 = 0;
        _pages--;
    }

    /// <summary>Removes every shadow of swap type <paramref name="type"/> (swapoff: the slots are gone).</summary>
    public void DropShadows(int type)
    {
        lock (_lock)
        {
            if (_trees[type] is { } tree) _shadows -= tree.DeleteValues(0);
        }
    }

    /// <summary>The offsets of <paramref name="type"/> that have a cached page, in order (for swapoff).</summary>
    public List<ulong> Offsets(int type)
    {
        var found = new List<ulong>();
        lock (_lock) ForEachPage(type, (offset, _) => found.Add(offset));
        return found;
    }

    /// <summary>Checks the invariants in the class remarks for the pages' side; throws <see cref="InvalidOperationException"/>.</summary>
    public void CheckConsistency(Func<SwapEntry, bool> hasCacheBit)
    {
        lock (_lock)
        {
            long count = 0;
            for (int type = 0; type < _trees.Length; type++)
            {
                int t = type;
                ForEachPage(type, (offset, page) =>
                {
                    count++;
                    var entry = new SwapEntry(t, offset);
                    if (!page->Has(PageFlags.SwapCache) || EntryOf(page) != entry)
                        throw new InvalidOperationException($"swap cache: {entry} holds {page->Describe()} which says {EntryOf(page)}.");
                    if (!hasCacheBit(entry)) throw new InvalidOperationException($"swap cache: {entry} has a page but no SWAP_HAS_CACHE.");
                });
            }
            if (count != _pages) throw new InvalidOperationException($"swap cache: {count} pages in the trees, count {_pages}.");
        }
    }

    private delegate void PageVisitor(ulong offset, PageFrame* page);

    /// <summary>Visits the pages (not the shadows) cached for <paramref name="type"/>, in offset order. Under <c>_lock</c>.</summary>
    private void ForEachPage(int type, PageVisitor visit)
    {
        PageTree? tree = _trees[type];
        if (tree == null) return;
        Span<ulong> offsets = stackalloc ulong[64];
        PageFrame** pages = stackalloc PageFrame*[64];
        ulong next = 0;
        while (true)
        {
            int n = tree.Gang(next, ulong.MaxValue, -1, offsets, pages);
            if (n == 0) return;
            for (int i = 0; i < n; i++) visit(offsets[i], pages[i]);
            next = offsets[n - 1] + 1;
        }
    }

    /// <summary>Frees the trees' nodes (the pages are the page allocator's).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            foreach (PageTree? tree in _trees) tree?.Abandon(); // shadows, and pages that go with the arena
        }
    }
}
