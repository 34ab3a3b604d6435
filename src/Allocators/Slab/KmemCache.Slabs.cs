using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // The node side: slabs from and back to the page allocator, the node lists under their locks, and the paths that
    // use them directly (debug caches, node-bound allocations, a thread whose context a drainer holds).

    /// <summary>The head frame of the page that holds <paramref name="obj"/>, or null outside the arena (virt_to_slab without the type check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageFrame* SlabOf(PhysicalMemory memory, void* obj)
    {
        PageFrame* page = memory.VirtToPage(obj);
        if (page != null && (page->FlagsAndZone & (uint)PageFlags.Tail) != 0) page = (PageFrame*)page->Private;
        return page;
    }

    private byte* SlabBase(PageFrame* slab) => _memory.PageAddress(slab);

    /// <summary>Index of the object at <paramref name="p"/> in its slab, or -1 when it is not an object start.</summary>
    private int ObjectIndex(PageFrame* slab, void* p)
    {
        nuint offset = (nuint)p - (nuint)SlabBase(slab) - (nuint)_d->RedLeftPad;
        if (offset >= (nuint)((uint)_d->Objects * (uint)_d->Size)) return -1;
        // offset < 2^16 * Size, so the reciprocal gives the exact quotient (reciprocal_divide).
        uint index = (uint)(((ulong)offset * _d->Reciprocal) >> 32);
        return index * (uint)_d->Size == offset ? (int)index : -1;
    }

    private void* ObjectAt(PageFrame* slab, int index) => SlabBase(slab) + (long)index * _d->Size + _d->RedLeftPad;

    private KmemCacheNode* NodeOf(PageFrame* slab) => _d->Nodes + slab->ZoneId / PageAllocator.ZonesPerNode;

    /// <summary>Stores a hardened link in <paramref name="obj"/>.</summary>
    private void SetFreePointer(void* obj, void* next)
    {
        void** location = FreePointerAddress(_d, obj);
        *location = EncodeFreePointer(_d, location, next);
    }

    private void* GetFreePointer(void* obj) => DecodeFreePointer(_d, FreePointerAddress(_d, obj));

    /// <summary>
    /// Allocates a slab's pages and formats it (allocate_slab): every object on its own free list, first object first.
    /// <paramref name="node"/> is a preference: the page allocator may fall back to another node. Null when out of pages.
    /// The slab is on no list and counted nowhere yet.
    /// </summary>
    private PageFrame* NewSlab(Gfp gfp, int node)
    {
        int order = _d->Order;
        Gfp pageGfp = (gfp & ~(Gfp.Zero | Gfp.Comp)) | (order > 0 ? Gfp.Comp : 0);
        PageFrame* slab = node >= 0 ? _pages.AllocPagesNode(node, pageGfp, order) : _pages.AllocPages(pageGfp, order);
        if (slab == null) return null;
        byte* bytes = SlabBase(slab);
        try
        {
            bool poison = _d->Has(SlabFlags.Poison) && _ctor == null;
            if (poison) NativeMemory.Fill(bytes, (nuint)(PageFrame.PageSize << order), SlabPoison.InUse);
            void* next = null;
            for (int i = _d->Objects - 1; i >= 0; i--)
            {
                void* obj = bytes + (long)i * _d->Size + _d->RedLeftPad;
                if ((_d->Flags & (int)SlabFlags.Debug) != 0)
                {
                    InitObject(obj, active: false);
                    if (_d->TrackOffset >= 0) NativeMemory.Clear((byte*)obj + _d->TrackOffset, (nuint)(2 * sizeof(Track)));
                    if (_d->OrigSizeOffset >= 0) *(uint*)((byte*)obj + _d->OrigSizeOffset) = (uint)_d->ObjectSize;
                }
                _ctor?.Invoke(obj);
                SetFreePointer(obj, next);
                next = obj;
            }
            slab->FlagsAndZone = (slab->FlagsAndZone & ~(SlabPage.KmallocClassMask | SlabPage.OnThreadFullList)) | (uint)PageFlags.Slab | SlabPage.KmallocClassBits(_d->KmallocIndex);
            slab->Private = (nuint)_d;
            SlabPage.SetFreelist(slab, next);
            SlabPage.SetFreeCount(slab, _d->Objects);
            SlabPage.State(slab) = 0;
            slab->Next = slab->Prev = null;
        }
        catch
        {
            _pages.FreePages(slab, order);
            throw;
        }
        Interlocked.Increment(ref _d->SlabsAllocated);
        return slab;
    }

    /// <summary>Counts a new slab in its node, owned by the thread context <paramref name="owner"/> (on no node list).</summary>
    private void AccountNewSlab(PageFrame* slab, int owner)
    {
        KmemCacheNode* n = NodeOf(slab);
        NativeSpinLock.Acquire(&n->ListLock);
        n->NrSlabs++;
        n->TotalObjects += _d->Objects;
        Volatile.Write(ref SlabPage.State(slab), SlabPage.Owned(owner));
        NativeSpinLock.Release(&n->ListLock);
    }

    /// <summary>Counts a new slab in its node and puts it on the node's partial list; returns the node.</summary>
    private int AddNewSlabToNode(PageFrame* slab)
    {
        KmemCacheNode* n = NodeOf(slab);
        NativeSpinLock.Acquire(&n->ListLock);
        n->NrSlabs++;
        n->TotalObjects += _d->Objects;
        Volatile.Write(ref SlabPage.State(slab), SlabPage.OnNodeState());
        SlabPage.Push(&n->Partial, slab);
        n->NrPartial++;
        n->FreeObjects += SlabPage.FreeCount(slab);
        NativeSpinLock.Release(&n->ListLock);
        return (int)(n - _d->Nodes);
    }

    /// <summary>Gives an empty slab, on no list and no longer counted in its node, back to the page allocator (discard_slab).</summary>
    private void DiscardSlab(PageFrame* slab)
    {
        slab->FlagsAndZone &= ~((ulong)(uint)PageFlags.Slab | SlabPage.KmallocClassMask | SlabPage.OnThreadFullList);
        slab->Private = 0;
        slab->Data0 = 0;
        slab->Data1 = 0;
        slab->MapCount = 0;
        _pages.FreePages(slab, _d->Order);
        Interlocked.Increment(ref _d->SlabsFreed);
    }

    /// <summary>
    /// True when the node keeps no more empty slabs: it has more partial slabs than min_partial or a quarter of its slabs
    /// (a burst's slabs are kept for the next burst up to that). Node lock held.
    /// </summary>
    private bool NodeHasEnoughPartial(KmemCacheNode* n) => n->NrPartial >= Math.Max(_d->MinPartial, n->NrSlabs / 4);

    /// <summary>Takes a slab out of its node's books for the page allocator (node lock held; the slab is on no list).</summary>
    private static void UncountSlab(KmemCacheNode* n, PageFrame* slab, int objects)
    {
        n->NrSlabs--;
        n->TotalObjects -= objects;
        SlabPage.State(slab) = 0;
    }

    /// <summary>
    /// A thread gives up a slab it owns and holds on no list (deactivate_slab / unfreeze_partials): with free objects it
    /// goes to its node's partial list, or back to the page allocator when all its objects are free and the node has
    /// enough partial slabs; with none it floats (its last owner may take it back, anyone else's free puts it on the node).
    /// </summary>
    private void Unfreeze(PageFrame* slab)
    {
        KmemCacheNode* n = NodeOf(slab);
        PageFrame* gone = null;
        NativeSpinLock.Acquire(&n->ListLock);
        while (true)
        {
            long state = SlabPage.ReadState(slab);
            Debug.Assert(SlabPage.Owner(state) != 0 && !SlabPage.OnNode(state) && !SlabPage.IsFloating(state), "only an owned slab is unfrozen");
            int free = SlabPage.FreeCount(slab) + SlabPage.RemoteCount(state);
            long next = free == 0
                ? SlabPage.Floating(SlabPage.Owner(state))
                : SlabPage.OnNodeState(SlabPage.RemoteHead(state), SlabPage.RemoteCount(state));
            if (Interlocked.CompareExchange(ref SlabPage.State(slab), next, state) != state) continue;
            if (free == 0) break;
            if (free >= _d->Objects && NodeHasEnoughPartial(n))
            {
                UncountSlab(n, slab, _d->Objects);
                gone = slab;
            }
            else
            {
                SlabPage.Push(&n->Partial, slab);
                n->NrPartial++;
                n->FreeObjects += SlabPage.FreeCount(slab);
            }
            break;
        }
        NativeSpinLock.Release(&n->ListLock);
        if (gone != null) DiscardSlab(gone);
    }

    /// <summary>
    /// Takes a slab off a node's partial list for the thread context <paramref name="owner"/> (get_partial_node), the
    /// current node first; null when every node's list is empty.
    /// </summary>
    private PageFrame* TakeFromNode(int owner)
    {
        int nodes = _d->NodeCount;
        int start = _pages.CurrentNode;
        for (int i = 0; i < nodes; i++)
        {
            KmemCacheNode* n = _d->Nodes + (start + i) % nodes;
            if (Volatile.Read(ref *(nint*)&n->Partial) == 0) continue;
            NativeSpinLock.Acquire(&n->ListLock);
            PageFrame* slab = n->Partial;
            if (slab != null)
            {
                SlabPage.Remove(&n->Partial, slab);
                n->NrPartial--;
                n->FreeObjects -= SlabPage.FreeCount(slab);
                while (true)
                {
                    long state = SlabPage.ReadState(slab);
                    long owned = SlabPage.Owned(owner, SlabPage.RemoteHead(state), SlabPage.RemoteCount(state));
                    if (Interlocked.CompareExchange(ref SlabPage.State(slab), owned, state) == state) break;
                }
            }
            NativeSpinLock.Release(&n->ListLock);
            if (slab != null) return slab;
        }
        return null;
    }

    /// <summary>
    /// A free into a floating slab by a thread that cannot claim it: the slab goes to its node's partial list with the
    /// object on its free list. False when the slab's state changed meanwhile (the caller looks again).
    /// </summary>
    private bool FloatingToNode(PageFrame* slab, void* obj, void** location, long floating)
    {
        KmemCacheNode* n = NodeOf(slab);
        bool done = false;
        NativeSpinLock.Acquire(&n->ListLock);
        if (Interlocked.CompareExchange(ref SlabPage.State(slab), SlabPage.OnNodeState(), floating) == floating)
        {
            *location = EncodeFreePointer(_d, location, null);
            SlabPage.SetFreelist(slab, obj);
            SlabPage.SetFreeCount(slab, 1);
            SlabPage.Push(&n->Partial, slab);
            n->NrPartial++;
            n->FreeObjects++;
            done = true;
        }
        NativeSpinLock.Release(&n->ListLock);
        return done;
    }

    /// <summary>A remote free may have emptied a slab on a node list: gives it back when the node has enough partial slabs.</summary>
    private void DiscardIfEmptyOnNode(PageFrame* slab)
    {
        KmemCacheNode* n = NodeOf(slab);
        PageFrame* gone = null;
        NativeSpinLock.Acquire(&n->ListLock);
        long state = SlabPage.ReadState(slab);
        if (SlabPage.OnNode(state) && SlabPage.Owner(state) == 0 && SlabPage.Cache(slab) == _d &&
            SlabPage.FreeCount(slab) + SlabPage.RemoteCount(state) >= _d->Objects)
        {
            SlabPage.Remove(&n->Partial, slab);
            n->NrPartial--;
            if (NodeHasEnoughPartial(n))
            {
                n->FreeObjects -= SlabPage.FreeCount(slab);
                UncountSlab(n, slab, _d->Objects);
                gone = slab;
            }
            else
            {
                SlabPage.Push(&n->Partial, slab);
                n->NrPartial++;
            }
        }
        NativeSpinLock.Release(&n->ListLock);
        if (gone != null) DiscardSlab(gone);
    }

    /// <summary>
    /// Takes an object from the node lists under their locks, with no thread entry (debug caches with their checks,
    /// node-bound requests, caches the fast paths do not serve); null when every partial list is empty. Inside the context.
    /// </summary>
    private void* TakeFromNodesLocked(int node, int requestedSize, int site)
    {
        int nodes = _d->NodeCount;
        int start = node < 0 ? _pages.CurrentNode : node;
        int tries = node < 0 ? nodes : 1;
        for (int i = 0; i < tries; i++)
        {
            KmemCacheNode* n = _d->Nodes + (start + i) % nodes;
            if (Volatile.Read(ref *(nint*)&n->Partial) == 0) continue;
            NativeSpinLock.Acquire(&n->ListLock);
            void* obj = null;
            try
            {
                PageFrame* slab = n->Partial;
                if (slab != null)
                {
                    obj = TakeOneLocked(n, slab);
                    if (obj != null && _d->FastPath == 0) AllocDebug(slab, obj, requestedSize, site);
                }
            }
            finally
            {
                NativeSpinLock.Release(&n->ListLock);
            }
            if (obj != null) return obj;
        }
        return null;
    }

    /// <summary>
    /// Takes the first free object of a slab on the node's partial list (node lock held), its remote list first moved
    /// onto its free list when that is empty; a slab left with no free object goes to the full list (debug caches) or
    /// floats. Null only when a corrupted list left the slab with nothing (it is then moved on too).
    /// </summary>
    private void* TakeOneLocked(KmemCacheNode* n, PageFrame* slab)
    {
        void* obj = SlabPage.Freelist(slab);
        if (obj == null)
        {
            long old = Interlocked.Exchange(ref SlabPage.State(slab), SlabPage.OnNodeState());
            int head = SlabPage.RemoteHead(old);
            if (head != 0)
            {
                obj = ObjectAt(slab, head - 1);
                SlabPage.SetFreelist(slab, obj);
                SlabPage.SetFreeCount(slab, SlabPage.RemoteCount(old));
                n->FreeObjects += SlabPage.RemoteCount(old);
            }
        }
        if (obj != null)
        {
            void* next = GetFreePointer(obj);
            int free = SlabPage.FreeCount(slab) - 1;
            if (next != null && ObjectIndex(slab, next) < 0)
            {
                // Never follow a corrupted pointer: cut the list here; the rest of the slab's free objects are lost.
                RecordFreelistCorruption(slab, obj, next);
                n->FreeObjects -= free;
                free = 0;
                next = null;
            }
            SlabPage.SetFreelist(slab, next);
            SlabPage.SetFreeCount(slab, free);
            n->FreeObjects--;
            if (_d->FastPath != 0) *FreePointerAddress(_d, obj) = null;
        }
        if (SlabPage.Freelist(slab) == null) SlabExhaustedOnNode(n, slab);
        return obj;
    }

    /// <summary>A partial slab's free list ran out under the node lock: full list (debug) or floating, unless remote frees came in.</summary>
    private void SlabExhaustedOnNode(KmemCacheNode* n, PageFrame* slab)
    {
        if (_d->FastPath == 0)
        {
            SlabPage.Remove(&n->Partial, slab);
            n->NrPartial--;
            SlabPage.Push(&n->Full, slab);
            n->NrFull++;
            return;
        }
        long state = SlabPage.OnNodeState();
        if (Interlocked.CompareExchange(ref SlabPage.State(slab), SlabPage.Floating(0), state) != state) return;
        SlabPage.Remove(&n->Partial, slab);
        n->NrPartial--;
    }

    /// <summary>
    /// Frees every empty slab on every node, ignoring min_partial (the core of kmem_cache_shrink); each partial slab's
    /// remote list is moved onto its free list first. Returns the pages freed.
    /// </summary>
    private long DiscardEmptySlabs()
    {
        long pages = 0;
        var empty = new List<nint>();
        for (int i = 0; i < _d->NodeCount; i++)
        {
            KmemCacheNode* n = _d->Nodes + i;
            NativeSpinLock.Acquire(&n->ListLock);
            PageFrame* slab = n->Partial;
            while (slab != null)
            {
                PageFrame* next = slab->Next;
                CollectRemoteLocked(n, slab);
                if (SlabPage.FreeCount(slab) == _d->Objects)
                {
                    SlabPage.Remove(&n->Partial, slab);
                    n->NrPartial--;
                    n->FreeObjects -= _d->Objects;
                    UncountSlab(n, slab, _d->Objects);
                    empty.Add((nint)slab);
                }
                slab = next;
            }
            NativeSpinLock.Release(&n->ListLock);
        }
        foreach (nint slab in empty)
        {
            DiscardSlab((PageFrame*)slab);
            pages += 1L << _d->Order;
        }
        return pages;
    }

    /// <summary>
    /// Moves a node slab's remote list in front of its free list (node lock held): walks it to its tail, never past a
    /// link that does not name an object of the slab or past the count the state word gives.
    /// </summary>
    private void CollectRemoteLocked(KmemCacheNode* n, PageFrame* slab)
    {
        if (SlabPage.RemoteCount(SlabPage.ReadState(slab)) == 0) return;
        long old = Interlocked.Exchange(ref SlabPage.State(slab), SlabPage.OnNodeState());
        int head = SlabPage.RemoteHead(old);
        int count = SlabPage.RemoteCount(old);
        if (head == 0) return;
        void* first = ObjectAt(slab, head - 1);
        void* tail = first;
        int taken = 1;
        while (taken < count)
        {
            void* next = GetFreePointer(tail);
            if (next == null) break;
            if (ObjectIndex(slab, next) < 0)
            {
                RecordFreelistCorruption(slab, tail, next);
                break;
            }
            tail = next;
            taken++;
        }
        SetFreePointer(tail, SlabPage.Freelist(slab));
        SlabPage.SetFreelist(slab, first);
        SlabPage.SetFreeCount(slab, SlabPage.FreeCount(slab) + taken);
        n->FreeObjects += taken;
    }

    /// <summary>Calls <paramref name="visit"/> with every slab of this cache in the arena, wherever it is (a scan of the frame arrays: for reports).</summary>
    private void ForEachSlab(Action<nint> visit)
    {
        MemSection* sections = _memory.SectionArray;
        for (int i = 0; i < _memory.MaxSections; i++)
        {
            if (!_memory.IsSectionOnline(i)) continue;
            PageFrame* frames = sections[i].MemMap;
            for (long f = 0; f < sections[i].Pages; f++)
            {
                PageFrame* page = frames + f;
                if ((page->FlagsAndZone & (ulong)(PageFlags.Slab | PageFlags.Tail)) == (ulong)PageFlags.Slab && page->Private == (nuint)_d)
                    visit((nint)page);
            }
        }
    }
}
