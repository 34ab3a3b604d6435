using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // The node side: slabs from and back to the page allocator, the node lists under their locks, and the paths that
    // use them directly (debug caches, node-bound allocations, caches the fast paths do not serve).

    /// <summary>The head frame of the page that holds <paramref name="obj"/>, or null outside the arena (virt_to_slab without the type check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageFrame* SlabOf(PhysicalMemory memory, void* obj)
    {
        PageFrame* page = memory.VirtToPage(obj);
        if (page != null && (page->FlagsAndZone & (uint)PageFlags.Tail) != 0) page = (PageFrame*)page->Private;
        return page;
    }

    private byte* SlabBase(PageFrame* slab) => _memory.AddressOf(slab);

    /// <summary>A slab's local bitmap (its remote one is <see cref="KmemCacheData.RemoteDelta"/> words on), in a flat or a sparse arena.</summary>
    private ulong* LocalOf(PageFrame* slab) => LocalBitmapAny(_d, slab);

    /// <summary>Index of the object at <paramref name="p"/> in its slab, or -1 when it is not an object start.</summary>
    private int ObjectIndex(PageFrame* slab, void* p)
    {
        nuint offset = (nuint)p - (nuint)SlabBase(slab) - (nuint)_d->RedLeftPad;
        if (offset >= _d->SlabBytes) return -1;
        // offset < 2^16 * Size, so the reciprocal gives the exact quotient (reciprocal_divide).
        uint index = (uint)(((ulong)offset * _d->Reciprocal) >> 32);
        return index * (uint)_d->Size == offset ? (int)index : -1;
    }

    private void* ObjectAt(PageFrame* slab, int index) => SlabBase(slab) + (long)index * _d->Size + _d->RedLeftPad;

    private KmemCacheNode* NodeOf(PageFrame* slab) => _d->Nodes + slab->ZoneId / PageAllocator.ZonesPerNode;

    /// <summary>True when object <paramref name="index"/> of the slab is free in either bitmap (a racy read: an allocated object's bits do not change under it).</summary>
    private bool IsFree(PageFrame* slab, int index)
    {
        ulong* local = LocalOf(slab) + (index >> 6);
        return ((Volatile.Read(ref *local) | Volatile.Read(ref local[_d->RemoteDelta])) & (1UL << index)) != 0;
    }

    /// <summary>
    /// Allocates a slab's pages and formats it (allocate_slab): every object free in its local bitmap, none in its
    /// remote one; the objects themselves are not touched (but for debug caches' patterns and constructors).
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
            if ((_d->Flags & (int)SlabFlags.Debug) != 0)
            {
                if (_d->Has(SlabFlags.Poison) && _ctor == null) NativeMemory.Fill(bytes, (nuint)(PageFrame.PageSize << order), SlabPoison.InUse);
                for (int i = 0; i < _d->Objects; i++)
                {
                    void* obj = bytes + (long)i * _d->Size + _d->RedLeftPad;
                    InitObject(obj, active: false);
                    if (_d->TrackOffset >= 0) NativeMemory.Clear((byte*)obj + _d->TrackOffset, (nuint)(2 * sizeof(Track)));
                    if (_d->OrigSizeOffset >= 0) *(uint*)((byte*)obj + _d->OrigSizeOffset) = (uint)_d->ObjectSize;
                }
            }
            if (_ctor != null)
            {
                for (int i = 0; i < _d->Objects; i++) _ctor(bytes + (long)i * _d->Size + _d->RedLeftPad);
            }
            if (_kasan != null) KasanNewSlab(bytes);
            slab->FlagsAndZone = (slab->FlagsAndZone & ~(SlabPage.KmallocClassMask | SlabPage.ThreadListBits)) | (uint)PageFlags.Slab | SlabPage.KmallocClassBits(_d->KmallocIndex);
            slab->Private = (nuint)_d;
            ulong* local = LocalOf(slab);
            for (int i = 0; i < _d->Words; i++)
            {
                local[i] = i == _d->Words - 1 ? _d->LastWordMask : ulong.MaxValue;
                local[_d->RemoteDelta + i] = 0;
            }
            SlabPage.SetFreeCount(slab, _d->Objects);
            SlabPage.State(slab) = 0;
            *FullLinkOf(_d, slab) = null;
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
        Volatile.Write(ref SlabPage.State(slab), SlabPage.OnNodeState);
        LinkPartial(n, slab);
        NativeSpinLock.Release(&n->ListLock);
        return (int)(n - _d->Nodes);
    }

    /// <summary>Puts a slab (state on-node already) on the node's partial list with its local bitmap's count (node lock held).</summary>
    private void LinkPartial(KmemCacheNode* n, PageFrame* slab)
    {
        NativeSpinLock.AssertHeld(&n->ListLock);
        int free = SlabPage.Count(LocalOf(slab), _d->Words);
        SlabPage.SetFreeCount(slab, free);
        SlabPage.Push(&n->Partial, slab);
        n->NrPartial++;
        n->FreeObjects += free;
    }

    /// <summary>Takes a slab off the node's partial list (node lock held).</summary>
    private static void UnlinkPartial(KmemCacheNode* n, PageFrame* slab)
    {
        NativeSpinLock.AssertHeld(&n->ListLock);
        SlabPage.Remove(&n->Partial, slab);
        n->NrPartial--;
        n->FreeObjects -= SlabPage.FreeCount(slab);
    }

    /// <summary>Gives an empty slab, on no list and no longer counted in its node, back to the page allocator (discard_slab).</summary>
    private void DiscardSlab(PageFrame* slab)
    {
        slab->FlagsAndZone &= ~((ulong)(uint)PageFlags.Slab | SlabPage.KmallocClassMask | SlabPage.ThreadListBits);
        slab->Private = 0;
        slab->Data0 = 0;
        slab->Data1 = 0;
        *(ulong*)&slab->_refcount = 1; // RefCount 1, MapCount 0: in-frame bitmaps lived there
        if (_rcuSlabHandler != 0) _pages.Rcu.Enqueue(_rcuSlabHandler, (nint)slab); // rcu_free_slab
        else _pages.FreePages(slab, _d->Order);
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
        NativeSpinLock.AssertHeld(&n->ListLock);
        n->NrSlabs--;
        n->TotalObjects -= objects;
        SlabPage.State(slab) = 0;
    }

    /// <summary>
    /// A thread gives up a slab it owns and holds on no list (deactivate_slab / unfreeze_partials): with free objects it
    /// goes to its node's partial list (its remote frees taken in), or back to the page allocator when all its objects
    /// are free and the node has enough partial slabs; with none it floats (its last owner may take it back, anyone
    /// else's free puts it on the node).
    /// </summary>
    private void Unfreeze(PageFrame* slab)
    {
        KmemCacheNode* n = NodeOf(slab);
        PageFrame* gone = null;
        ulong* local = LocalOf(slab);
        ulong* remote = SlabPage.Remote(local, _d);
        NativeSpinLock.Acquire(&n->ListLock);
        long state = SlabPage.ReadState(slab);
        Debug.Assert(SlabPage.Owner(state) != 0 && !SlabPage.OnNode(state) && !SlabPage.IsFloating(state), "only an owned slab is unfrozen");
        SlabPage.CollectRemote(local, remote, _d->Words);
        if (!SlabPage.Any(local, _d->Words))
        {
            Volatile.Write(ref SlabPage.State(slab), SlabPage.Floating(SlabPage.Owner(state)));
            // A remote free that came after the collection sees the slab floating and rescues it, or we see its bit.
            Interlocked.MemoryBarrier();
            if (SlabPage.Any(remote, _d->Words)) TryFloatingToNodeLocked(n, slab);
        }
        else
        {
            Volatile.Write(ref SlabPage.State(slab), SlabPage.OnNodeState);
            if (SlabPage.Count(local, _d->Words) == _d->Objects && NodeHasEnoughPartial(n))
            {
                UncountSlab(n, slab, _d->Objects);
                gone = slab;
            }
            else
            {
                LinkPartial(n, slab);
            }
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
                UnlinkPartial(n, slab);
                Volatile.Write(ref SlabPage.State(slab), SlabPage.Owned(owner));
            }
            NativeSpinLock.Release(&n->ListLock);
            if (slab != null) return slab;
        }
        return null;
    }

    /// <summary>
    /// A free into a floating slab by a thread that may not take it back, or one that raced the slab floating: onto its
    /// node's partial list (the free itself then goes into the remote bitmap like any other).
    /// </summary>
    private void RescueFloating(PageFrame* slab)
    {
        KmemCacheNode* n = NodeOf(slab);
        NativeSpinLock.Acquire(&n->ListLock);
        TryFloatingToNodeLocked(n, slab);
        NativeSpinLock.Release(&n->ListLock);
    }

    /// <summary>Moves a floating slab with remote frees to the node's partial list, its remote bits taken in (node lock held).</summary>
    private bool TryFloatingToNodeLocked(KmemCacheNode* n, PageFrame* slab)
    {
        NativeSpinLock.AssertHeld(&n->ListLock);
        long state = SlabPage.ReadState(slab);
        if (!SlabPage.IsFloating(state)) return false;
        if (Interlocked.CompareExchange(ref SlabPage.State(slab), SlabPage.OnNodeState, state) != state) return false;
        ulong* local = LocalOf(slab);
        SlabPage.CollectRemote(local, SlabPage.Remote(local, _d), _d->Words);
        LinkPartial(n, slab);
        return true;
    }

    /// <summary>True when every object of a slab on a node list is free (a racy read; the lock holder checks again).</summary>
    private bool IsEmptyOnNode(PageFrame* slab)
    {
        ulong* local = LocalOf(slab);
        return SlabPage.Count(local, _d->Words) + SlabPage.Count(SlabPage.Remote(local, _d), _d->Words) >= _d->Objects;
    }

    /// <summary>A remote free may have emptied a slab on a node list: gives it back when the node has enough partial slabs.</summary>
    private void DiscardIfEmptyOnNode(PageFrame* slab)
    {
        KmemCacheNode* n = NodeOf(slab);
        PageFrame* gone = null;
        NativeSpinLock.Acquire(&n->ListLock);
        if (SlabPage.OnNode(SlabPage.ReadState(slab)) && SlabPage.Cache(slab) == _d && _d->FastPath != 0)
        {
            CollectRemoteLocked(n, slab);
            if (SlabPage.FreeCount(slab) == _d->Objects)
            {
                UnlinkPartial(n, slab);
                if (NodeHasEnoughPartial(n))
                {
                    UncountSlab(n, slab, _d->Objects);
                    gone = slab;
                }
                else
                {
                    LinkPartial(n, slab);
                }
            }
        }
        NativeSpinLock.Release(&n->ListLock);
        if (gone != null) DiscardSlab(gone);
    }

    /// <summary>Takes a node slab's remote frees into its local bitmap and the node's count (node lock held).</summary>
    private void CollectRemoteLocked(KmemCacheNode* n, PageFrame* slab)
    {
        NativeSpinLock.AssertHeld(&n->ListLock);
        ulong* local = LocalOf(slab);
        int taken = SlabPage.CollectRemote(local, SlabPage.Remote(local, _d), _d->Words);
        SlabPage.SetFreeCount(slab, SlabPage.FreeCount(slab) + taken);
        n->FreeObjects += taken;
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
    /// Takes the lowest free object of a slab on the node's partial list (node lock held), its remote frees taken in
    /// first when the local bitmap has none; a slab left with no free object goes to the full list (debug caches) or
    /// floats. Null when the slab had none (it is moved on too).
    /// </summary>
    private void* TakeOneLocked(KmemCacheNode* n, PageFrame* slab)
    {
        NativeSpinLock.AssertHeld(&n->ListLock);
        ulong* local = LocalOf(slab);
        if (SlabPage.FreeCount(slab) == 0) CollectRemoteLocked(n, slab);
        void* obj = null;
        int index = _randomFreelist ? TakeRandomFreeIndex(_d, local, (ulong)Random.Shared.NextInt64()) : TakeLowestFreeIndex(local);
        if (index >= 0)
        {
            obj = ObjectAt(slab, index);
            SlabPage.SetFreeCount(slab, SlabPage.FreeCount(slab) - 1);
            n->FreeObjects--;
        }
        if (SlabPage.FreeCount(slab) == 0) SlabExhaustedOnNode(n, slab);
        return obj;
    }

    /// <summary>Clears the lowest set bit of a slab's local bitmap and returns its index; -1 when the bitmap is empty.</summary>
    private int TakeLowestFreeIndex(ulong* local)
    {
        for (int i = 0; i < _d->Words; i++)
        {
            ulong free = local[i];
            if (free == 0) continue;
            local[i] = free & (free - 1);
            return i * 64 + BitOperations.TrailingZeroCount(free);
        }
        return -1;
    }

    /// <summary>A partial slab's local bitmap ran out under the node lock: full list (debug) or floating, unless remote frees came in.</summary>
    private void SlabExhaustedOnNode(KmemCacheNode* n, PageFrame* slab)
    {
        if (_d->FastPath == 0)
        {
            UnlinkPartial(n, slab);
            SlabPage.Push(&n->Full, slab);
            n->NrFull++;
            return;
        }
        ulong* remote = SlabPage.Remote(LocalOf(slab), _d);
        if (SlabPage.Any(remote, _d->Words)) return;
        UnlinkPartial(n, slab);
        Volatile.Write(ref SlabPage.State(slab), SlabPage.Floating(0));
        // A remote free that came meanwhile sees the slab floating and waits for our lock to rescue it; or we see its bit.
        Interlocked.MemoryBarrier();
        if (SlabPage.Any(remote, _d->Words)) TryFloatingToNodeLocked(n, slab);
    }

    /// <summary>
    /// Frees every empty slab on every node, ignoring min_partial (the core of kmem_cache_shrink); each partial slab's
    /// remote frees are taken in first. Returns the pages freed.
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
                if (_d->FastPath != 0) CollectRemoteLocked(n, slab);
                if (SlabPage.FreeCount(slab) == _d->Objects)
                {
                    UnlinkPartial(n, slab);
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
