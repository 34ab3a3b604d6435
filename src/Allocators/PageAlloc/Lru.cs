using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

/// <summary>The four LRU lists of a node (enum lru_list, without the unevictable one).</summary>
public enum LruList
{
    /// <summary>Anonymous pages not used lately: the ones swap-out takes.</summary>
    InactiveAnon = 0,
    /// <summary>Anonymous pages in use.</summary>
    ActiveAnon = 1,
    /// <summary>Page-cache pages not used lately.</summary>
    InactiveFile = 2,
    /// <summary>Page-cache pages in use.</summary>
    ActiveFile = 3,
}

/// <summary>
/// The per-node LRU lists (mm/swap.c, the lruvec of mm/vmscan.c): every page reclaim may take — anonymous pages and
/// page-cache pages — sits on its node's active or inactive list of its kind, newest at the head, linked through the
/// frame's <see cref="PageFrame.Next"/>/<see cref="PageFrame.Prev"/> (PG_lru says it is on one). Reclaim isolates
/// pages from the tails with a reference taken, works on them with no list lock held, and puts back what it keeps.
/// </summary>
/// <remarks>
/// <para>Locks: one spin lock per node (the lru_lock), taken alone (nothing is called with it held). A page's
/// PG_lru and PG_active change only under it.</para>
/// <para>Invariants, per node and list, whenever the lock is free: <c>Count[l] = #pages on list l = Σ_z ZoneCount[l][z]</c>, <c>ZoneCount[l][z] = #pages of zone type z on list l</c>; every page on
/// list l has PG_lru, PG_active iff l is active, PG_swapbacked iff l is an anon list; a page with PG_lru is on
/// exactly one list. A page is freed only with PG_lru clear: the page allocator takes a page whose last reference
/// goes off its list first (<see cref="DeleteOnFree"/>), and reclaim isolates only pages it holds a reference to
/// (get_page_unless_zero), so a page being freed is never isolated.</para>
/// </remarks>
internal sealed unsafe class Lru : IDisposable
{
    private const int Lists = 4;

    [StructLayout(LayoutKind.Sequential, Size = 256)]
    private struct LruVec
    {
        public int Lock;
        public int Pad;
        public long NonresidentAge; // evictions and activations (workingset's clock)
        public fixed long RefaultActivations[2]; // WORKINGSET_ACTIVATE_ANON, _FILE on this node
        public fixed long RefaultSnapshot[2]; // lruvec->refaults: the counts when reclaim last finished here
        public fixed long Count[Lists];
        public fixed long ZoneCount[Lists * PageAllocator.ZonesPerNode]; // per list, then zone type: reclaim_idx's sizes
        public fixed ulong Head[Lists]; // PageFrame*: newest
        public fixed ulong Tail[Lists]; // PageFrame*: oldest
    }

    private readonly LruVec* _vecs;
    private readonly int _nodes;
    private readonly ZoneData* _zones;

    /// <summary>Lists for <paramref name="nodes"/> nodes whose zones are <paramref name="zones"/>.</summary>
    public Lru(int nodes, ZoneData* zones)
    {
        _nodes = nodes;
        _zones = zones;
        _vecs = (LruVec*)NativeMemory.AlignedAlloc((nuint)(nodes * sizeof(LruVec)), 64);
        NativeMemory.Clear(_vecs, (nuint)(nodes * sizeof(LruVec)));
    }

    /// <summary>page_to_nid.</summary>
    private int NodeOfPage(PageFrame* page) => _zones[page->ZoneId].Node;

    /// <summary>The list a page of this kind and activity belongs on.</summary>
    public static LruList ListOf(bool anon, bool active) => (LruList)((anon ? 0 : 2) + (active ? 1 : 0));

    private static LruList ListOf(PageFrame* page)
        => ListOf(page->Has(PageFlags.SwapBacked), page->Has(PageFlags.Active));

    /// <summary>Pages on <paramref name="list"/> of <paramref name="node"/> (lruvec_page_state).</summary>
    public long Count(int node, LruList list) => Volatile.Read(ref _vecs[node].Count[(int)list]);

    /// <summary>lruvec_lru_size(lruvec, lru, zone_idx): the pages of a node's list in zones up to <paramref name="reclaimIdx"/>.</summary>
    public long Count(int node, LruList list, ZoneType reclaimIdx)
    {
        if (reclaimIdx == ZoneType.HighMem) return Count(node, list);
        long pages = 0;
        for (int z = 0; z <= (int)reclaimIdx; z++) pages += Volatile.Read(ref _vecs[node].ZoneCount[(int)list * PageAllocator.ZonesPerNode + z]);
        return pages;
    }

    /// <summary>
    /// workingset_age_nonresident: the node's clock of evictions and activations, which a shadow entry snapshots on
    /// eviction so that a refault can tell how long its page was out.
    /// </summary>
    public long AgeNonresident(int node, long pages = 1) => Interlocked.Add(ref _vecs[node].NonresidentAge, pages);

    /// <summary>Counts a refault that activated its page on <paramref name="node"/> (workingset_activate's per-lruvec count).</summary>
    public void NoteRefaultActivation(int node, bool anon) => Interlocked.Increment(ref _vecs[node].RefaultActivations[anon ? 0 : 1]);

    /// <summary>
    /// True when refaults of this kind activated pages on <paramref name="node"/> since the last
    /// <see cref="SnapshotRefaults"/>: a new workingset is being established.
    /// </summary>
    public bool RefaultsSinceSnapshot(int node, bool anon)
    {
        int k = anon ? 0 : 1;
        return Volatile.Read(ref _vecs[node].RefaultActivations[k]) != Volatile.Read(ref _vecs[node].RefaultSnapshot[k]);
    }

    /// <summary>snapshot_refaults: remembers the node's refault activations at the end of a reclaim run.</summary>
    public void SnapshotRefaults(int node)
    {
        LruVec* vec = _vecs + node;
        for (int k = 0; k < 2; k++) Volatile.Write(ref vec->RefaultSnapshot[k], Volatile.Read(ref vec->RefaultActivations[k]));
    }

    /// <summary>The node's nonresident age now.</summary>
    public long NonresidentAge(int node) => Volatile.Read(ref _vecs[node].NonresidentAge);

    /// <summary>Pages on <paramref name="list"/> over every node.</summary>
    public long Total(LruList list)
    {
        long total = 0;
        for (int n = 0; n < _nodes; n++) total += Count(n, list);
        return total;
    }

    /// <summary>
    /// lru_cache_add: puts a page the caller holds a reference to at the head of its node's list of its kind
    /// (anon when PG_swapbacked), active when <paramref name="active"/>.
    /// </summary>
    public void Add(PageFrame* page, int node, bool active = false)
    {
        LruVec* vec = _vecs + node;
        NativeSpinLock.Acquire(&vec->Lock);
        Debug.Assert(!page->Has(PageFlags.Lru), "a page already on a list added again");
        SetFlags(page, active ? PageFlags.Lru | PageFlags.Active : PageFlags.Lru, active ? 0 : PageFlags.Active);
        LinkHead(vec, page, ListOf(page));
        NativeSpinLock.Release(&vec->Lock);
    }

    /// <summary>The page allocator's half of freeing a page whose last reference went while it was on a list.</summary>
    public void DeleteOnFree(PageFrame* page, int node)
    {
        LruVec* vec = _vecs + node;
        NativeSpinLock.Acquire(&vec->Lock);
        if (page->Has(PageFlags.Lru))
        {
            Unlink(vec, page, ListOf(page));
            SetFlags(page, 0, PageFlags.Lru | PageFlags.Active);
        }
        NativeSpinLock.Release(&vec->Lock);
    }

    /// <summary>SWAP_CLUSTER_MAX_SKIPPED: pages of ineligible zones one isolation steps over at most (bounds the lock hold).</summary>
    private const int MaxSkipped = 32 << 10;

    /// <summary>
    /// isolate_lru_folios: takes up to <paramref name="max"/> pages off the tail of <paramref name="list"/>, each with
    /// a reference the caller must give back (<see cref="Putback"/> or a put). Looks at no more than
    /// <paramref name="scan"/> eligible pages; pages on their way to being freed are left. Pages of zones above
    /// <paramref name="reclaimIdx"/> (sc->reclaim_idx: freeing them cannot serve the allocation) are stepped over and
    /// moved to the head, as the kernel splices its skipped list back, and count as scanned. Returns the count isolated.
    /// </summary>
    public int Isolate(int node, LruList list, int scan, int max, PageFrame** dst, out int scanned, ZoneType reclaimIdx = ZoneType.HighMem)
    {
        LruVec* vec = _vecs + node;
        int n = 0, eligible = 0, skipped = 0;
        NativeSpinLock.Acquire(&vec->Lock);
        var page = (PageFrame*)vec->Tail[(int)list];
        PageFrame* firstSkipped = null;
        while (page != null && page != firstSkipped && eligible < scan && n < max)
        {
            PageFrame* prev = page->Prev;
            if (PageAllocator.ZoneTypeOf(page) > reclaimIdx)
            {
                if (++skipped > MaxSkipped) break;
                Unlink(vec, page, list);
                LinkHead(vec, page, list);
                if (firstSkipped == null) firstSkipped = page; // the walk has come round once it meets it again
                page = prev;
                continue;
            }
            eligible++;
            int refs = Volatile.Read(ref page->_refcount);
            if (refs > 0 && Interlocked.CompareExchange(ref page->_refcount, refs + 1, refs) == refs)
            {
                Unlink(vec, page, list);
                SetFlags(page, 0, PageFlags.Lru);
                dst[n++] = page;
            }
            page = prev;
        }
        NativeSpinLock.Release(&vec->Lock);
        scanned = eligible + Math.Min(skipped, MaxSkipped);
        return n;
    }

    /// <summary>
    /// Puts an isolated page back on the head of the list its flags now say (putback_lru_page), PG_active from
    /// <paramref name="active"/>. The caller still drops its isolation reference afterwards.
    /// </summary>
    public void Putback(PageFrame* page, int node, bool active) => Add(page, node, active);

    /// <summary>
    /// folio_activate for a page on a list (mark_page_accessed's second touch): moves it to the head of the active
    /// list of its kind. False when it is not on a list (isolated, or not an LRU page).
    /// </summary>
    public bool Activate(PageFrame* page, int node)
    {
        LruVec* vec = _vecs + node;
        NativeSpinLock.Acquire(&vec->Lock);
        bool moved = page->Has(PageFlags.Lru) && !page->Has(PageFlags.Active);
        if (moved)
        {
            Unlink(vec, page, ListOf(page));
            SetFlags(page, PageFlags.Active, PageFlags.Referenced);
            LinkHead(vec, page, ListOf(page));
        }
        NativeSpinLock.Release(&vec->Lock);
        return moved;
    }

    /// <summary>
    /// mark_page_accessed for a page whose flags read <paramref name="flags"/>: the first touch sets PG_referenced, the
    /// second moves an inactive page to the active list. The caller keeps the page from being freed meanwhile.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void MarkAccessed(PageFrame* page, ulong flags)
    {
        if ((flags & (uint)PageFlags.Referenced) == 0) PageFrame.SetFlags(page, PageFlags.Referenced);
        else if ((flags & (uint)(PageFlags.Active | PageFlags.Lru)) == (uint)PageFlags.Lru) Activate(page, NodeOfPage(page));
    }

    /// <summary>Checks the invariants in the class remarks; throws <see cref="InvalidOperationException"/>.</summary>
    public void CheckConsistency()
    {
        Span<long> byZone = stackalloc long[PageAllocator.ZonesPerNode];
        for (int node = 0; node < _nodes; node++)
        {
            LruVec* vec = _vecs + node;
            NativeSpinLock.Acquire(&vec->Lock);
            try
            {
                for (int l = 0; l < Lists; l++)
                {
                    long count = 0;
                    byZone.Clear();
                    PageFrame* prev = null;
                    for (var p = (PageFrame*)vec->Head[l]; p != null; prev = p, p = p->Next)
                    {
                        if (p->Prev != prev) throw new InvalidOperationException($"lru: node {node} list {(LruList)l}: broken back link at {p->Describe()}.");
                        if (!p->Has(PageFlags.Lru) || ListOf(p) != (LruList)l)
                            throw new InvalidOperationException($"lru: node {node} list {(LruList)l} holds {p->Describe()}.");
                        byZone[(int)PageAllocator.ZoneTypeOf(p)]++;
                        if (++count > vec->Count[l]) break;
                    }
                    if (count != vec->Count[l] || (PageFrame*)vec->Tail[l] != prev)
                        throw new InvalidOperationException($"lru: node {node} list {(LruList)l}: {count} pages linked, count {vec->Count[l]}.");
                    for (int z = 0; z < PageAllocator.ZonesPerNode; z++)
                    {
                        if (byZone[z] != vec->ZoneCount[l * PageAllocator.ZonesPerNode + z])
                            throw new InvalidOperationException($"lru: node {node} list {(LruList)l}: {byZone[z]} pages of zone {(ZoneType)z} linked, count {vec->ZoneCount[l * PageAllocator.ZonesPerNode + z]}.");
                    }
                }
            }
            finally { NativeSpinLock.Release(&vec->Lock); }
        }
    }

    private static void LinkHead(LruVec* vec, PageFrame* page, LruList list)
    {
        int l = (int)list;
        var head = (PageFrame*)vec->Head[l];
        page->Prev = null;
        page->Next = head;
        if (head != null) head->Prev = page;
        else vec->Tail[l] = (ulong)page;
        vec->Head[l] = (ulong)page;
        vec->Count[l]++;
        vec->ZoneCount[l * PageAllocator.ZonesPerNode + (int)PageAllocator.ZoneTypeOf(page)]++;
    }

    private static void Unlink(LruVec* vec, PageFrame* page, LruList list)
    {
        int l = (int)list;
        if (page->Prev != null) page->Prev->Next = page->Next;
        else vec->Head[l] = (ulong)page->Next;
        if (page->Next != null) page->Next->Prev = page->Prev;
        else vec->Tail[l] = (ulong)page->Prev;
        page->Next = page->Prev = null;
        vec->Count[l]--;
        vec->ZoneCount[l * PageAllocator.ZonesPerNode + (int)PageAllocator.ZoneTypeOf(page)]--;
    }

    /// <summary>Sets then clears flags, each atomically: other bits (PG_locked, PG_dirty) change beside the list lock.</summary>
    private static void SetFlags(PageFrame* page, PageFlags set, PageFlags clear)
    {
        if (set != 0) PageFrame.SetFlags(page, set);
        if (clear != 0) PageFrame.ClearFlags(page, clear);
    }

    /// <summary>Frees the lists' memory; the pages on them are the page allocator's.</summary>
    public void Dispose() => NativeMemory.AlignedFree(_vecs);
}
