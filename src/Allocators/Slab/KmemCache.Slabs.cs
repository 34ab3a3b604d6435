using System.Diagnostics;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // The slab layer: per-node partial/full lists under the node's list lock.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void** FreePointerAddress(KmemCacheData* d, void* obj) => (void**)((byte*)obj + d->Offset);

    /// <summary>Stores the hardened free pointer: next XOR the cache secret XOR the byte-swapped slot address.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SetFreePointer(KmemCacheData* d, void* obj, void* next)
    {
        void** location = FreePointerAddress(d, obj);
        *location = (void*)((ulong)next ^ d->Random ^ BinaryPrimitives.ReverseEndianness((ulong)location));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void* GetFreePointer(KmemCacheData* d, void* obj)
    {
        void** location = FreePointerAddress(d, obj);
        return (void*)((ulong)*location ^ d->Random ^ BinaryPrimitives.ReverseEndianness((ulong)location));
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

    /// <summary>
    /// Allocates and formats a new slab and puts it on its node's partial list (allocate_slab). <paramref name="node"/>
    /// is a preference: the page allocator may fall back to another node. Returns the node the slab went to, or -1.
    /// </summary>
    private int GrowSlab(Gfp gfp, int node)
    {
        PageFrame* slab = NewSlab(gfp, node, reserved: 0);
        return slab == null ? -1 : PublishSlab(slab, reserved: 0, owner: 0);
    }

    /// <summary>
    /// Grows a slab for a thread whose magazines and partial slabs are out of objects: its first objects (the
    /// thread's refill target) go straight into the thread's loaded magazine, never linked into the slab's free list,
    /// so neither formatting the slab nor the refill reads or writes them (a burst of allocations that grows slab after
    /// slab touches each object once, when its user does). Returns the node the slab went to, or -1.
    /// </summary>
    private int GrowSlabInto(MagazineCache* mc, Gfp gfp)
    {
        Debug.Assert(_d->FastPath != 0, "debug caches have no magazines: their slabs keep every object on the free list");
        int reserved = Math.Min(mc->Target, _d->Objects);
        PageFrame* slab = NewSlab(gfp, -1, reserved);
        if (slab == null) return -1;
        // Published first, counting the reserved objects in use: whatever happens to them next (the magazine, or back to
        // the slab when a drainer holds the thread cache) is an ordinary operation on an ordinary slab.
        int node = PublishSlab(slab, reserved, mc->OwnerId);
        ThreadCacheHeader* c = &mc->Header;
        if (ThreadCacheHeader.TryEnter(c))
        {
            Magazine* m = mc->Loaded;
            bool room = m->Count + reserved <= m->Capacity;
            if (room)
            {
                // In the order a refill from the slab's free list would stack them (measured: popping them the other
                // way round made binary-trees 4-8 % slower).
                for (int i = 0; i < reserved; i++) m->Objects[m->Count++] = ObjectAt(slab, i);
                mc->ObjectsIn += reserved;
                mc->Refills++;
            }
            ThreadCacheHeader.Exit(c);
            if (room) return node;
        }
        void** objects = stackalloc void*[reserved];
        for (int i = 0; i < reserved; i++) objects[i] = ObjectAt(slab, i);
        FlushToSlabs(objects, reserved);
        return node;
    }

    /// <summary>
    /// Allocates a slab's pages and formats it, linking objects <paramref name="reserved"/> and up into its free list;
    /// the first <paramref name="reserved"/> are left for the caller. Null when out of pages.
    /// </summary>
    private PageFrame* NewSlab(Gfp gfp, int node, int reserved)
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
                if (i < reserved) continue;
                SetFreePointer(_d, obj, next);
                next = obj;
            }
            slab->FlagsAndZone = (slab->FlagsAndZone & ~SlabPage.KmallocClassMask) | (uint)PageFlags.Slab | SlabPage.KmallocClassBits(_d->KmallocIndex);
            slab->Private = (nuint)_d;
            SlabPage.SetFreelist(slab, next);
            slab->Data1 = 0;
        }
        catch
        {
            _pages.FreePages(slab, order);
            throw;
        }
        return slab;
    }

    /// <summary>
    /// Puts a new slab on its node's partial list, or the full one when all of its objects are
    /// <paramref name="reserved"/> for a refill by <paramref name="owner"/>; returns the node.
    /// </summary>
    private int PublishSlab(PageFrame* slab, int reserved, int owner)
    {
        KmemCacheNode* n = NodeOf(slab);
        NativeSpinLock.Acquire(&n->ListLock);
        if (reserved > 0)
        {
            SlabPage.NoteRefill(slab, owner);
            SlabPage.SetInUse(slab, reserved);
            n->InUseObjects += reserved;
        }
        bool full = reserved == _d->Objects;
        SlabPage.Push(full ? &n->Full : &n->Partial, slab);
        SlabPage.SetList(slab, full ? SlabPage.ListFull : SlabPage.ListPartial);
        if (full) n->NrFull++;
        else n->NrPartial++;
        n->NrSlabs++;
        n->TotalObjects += _d->Objects;
        NativeSpinLock.Release(&n->ListLock);
        Interlocked.Increment(ref _d->SlabsAllocated);
        return (int)(n - _d->Nodes);
    }

    /// <summary>Gives an empty slab back to the page allocator (discard_slab).</summary>
    private void DiscardSlab(PageFrame* slab)
    {
        slab->FlagsAndZone &= ~((ulong)(uint)PageFlags.Slab | SlabPage.KmallocClassMask);
        slab->Private = 0;
        slab->Data0 = 0;
        slab->Data1 = 0;
        SlabPage.SetOwner(slab, 0);
        _pages.FreePages(slab, _d->Order);
        Interlocked.Increment(ref _d->SlabsFreed);
    }

    /// <summary>Takes the first free object of a partial slab; the node lock is held.</summary>
    private void* TakeFromSlab(KmemCacheNode* n, PageFrame* slab)
    {
        void* obj = SlabPage.Freelist(slab);
        void* next = GetFreePointer(_d, obj);
        if (next != null && ObjectIndex(slab, next) < 0)
        {
            // Never follow a corrupted pointer: cut the list here; the rest of the slab's free objects are lost.
            RecordFreelistCorruption(slab, obj, next);
            int lost = _d->Objects - SlabPage.InUse(slab) - 1;
            SlabPage.SetInUse(slab, _d->Objects - 1);
            n->InUseObjects += lost;
            next = null;
        }
        SlabPage.SetFreelist(slab, next);
        SlabPage.SetInUse(slab, SlabPage.InUse(slab) + 1);
        n->InUseObjects++;
        if (next == null) MoveToFull(n, slab);
        return obj;
    }

    /// <summary>Puts an object back on its slab; returns the slab when it became empty and should be discarded. Node lock held.</summary>
    private PageFrame* FreeToSlab(KmemCacheNode* n, PageFrame* slab, void* obj) => FreeToSlab(n, slab, obj, obj, 1);

    /// <summary>
    /// Puts a chain of <paramref name="count"/> objects of one slab (linked from <paramref name="head"/> to
    /// <paramref name="tail"/>) back on it; returns the slab when it became empty and should be discarded. Node lock held.
    /// </summary>
    private PageFrame* FreeToSlab(KmemCacheNode* n, PageFrame* slab, void* head, void* tail, int count)
    {
        SetFreePointer(_d, tail, SlabPage.Freelist(slab));
        SlabPage.SetFreelist(slab, head);
        return ReturnedToSlab(n, slab, count);
    }

    /// <summary>
    /// Counts <paramref name="count"/> objects just put on <paramref name="slab"/>'s free list as free; returns the slab
    /// when it became empty and should be discarded. Node lock held.
    /// </summary>
    private PageFrame* ReturnedToSlab(KmemCacheNode* n, PageFrame* slab, int count)
    {
        int inUse = SlabPage.InUse(slab) - count;
        SlabPage.SetInUse(slab, inUse);
        n->InUseObjects -= count;
        if (inUse == 0) SlabPage.SetOwner(slab, 0); // empty again: the next refiller owns it
        if (SlabPage.List(slab) == SlabPage.ListFull) MoveToPartial(n, slab);
        // Keep some empty slabs for the next burst (a quarter of the cache, at least min_partial); give back the rest.
        if (inUse == 0 && n->NrPartial > Math.Max(_d->MinPartial, n->NrSlabs / 4))
        {
            SlabPage.Remove(&n->Partial, slab);
            n->NrPartial--;
            n->NrSlabs--;
            n->TotalObjects -= _d->Objects;
            SlabPage.SetList(slab, SlabPage.ListNone);
            return slab;
        }
        return null;
    }

    /// <summary>
    /// Moves up to <paramref name="want"/> objects from partial slabs into a magazine (get_partial), preferring
    /// <paramref name="node"/>. Each slab's whole free list is detached under the node lock in a few stores
    /// (get_freelist) and walked after the lock is dropped: the walk reads every object, usually from memory, and
    /// other threads' refills and flushes must not wait for that. What does not fit goes back in one splice.
    /// </summary>
    private void RefillFromSlabs(Magazine* m, int want, int node, int owner)
    {
        int nodes = _d->NodeCount;
        if (node < 0) node = _pages.CurrentNode;
        for (int i = 0; i < nodes && m->Count < want; i++)
        {
            KmemCacheNode* n = _d->Nodes + (node + i) % nodes;
            while (m->Count < want && n->Partial != null)
            {
                NativeSpinLock.Acquire(&n->ListLock);
                PageFrame* slab = PickPartial(n, owner);
                int free = 0;
                void* head = slab != null ? DetachFreelist(n, slab, owner, out free) : null;
                NativeSpinLock.Release(&n->ListLock);
                if (slab == null) break;
                TakeDetached(n, slab, head, free, m, want);
            }
        }
    }

    /// <summary>
    /// Takes every free object of a partial slab for the caller (node lock held): the slab counts them in use and moves
    /// to the full list; returns the head of their list and, in <paramref name="free"/>, how many there are.
    /// </summary>
    private void* DetachFreelist(KmemCacheNode* n, PageFrame* slab, int owner, out int free)
    {
        SlabPage.NoteRefill(slab, owner);
        void* head = SlabPage.Freelist(slab);
        SlabPage.SetFreelist(slab, null);
        free = _d->Objects - SlabPage.InUse(slab);
        SlabPage.SetInUse(slab, _d->Objects);
        n->InUseObjects += free;
        MoveToFull(n, slab);
        return head;
    }

    /// <summary>Moves a slab from the node's partial list to its full list (node lock held).</summary>
    private static void MoveToFull(KmemCacheNode* n, PageFrame* slab)
    {
        SlabPage.Remove(&n->Partial, slab);
        n->NrPartial--;
        SlabPage.Push(&n->Full, slab);
        n->NrFull++;
        SlabPage.SetList(slab, SlabPage.ListFull);
    }

    /// <summary>Moves a slab from the node's full list to its partial list (node lock held).</summary>
    private static void MoveToPartial(KmemCacheNode* n, PageFrame* slab)
    {
        SlabPage.Remove(&n->Full, slab);
        n->NrFull--;
        SlabPage.Push(&n->Partial, slab);
        n->NrPartial++;
        SlabPage.SetList(slab, SlabPage.ListPartial);
    }

    /// <summary>
    /// Walks a detached free list (no lock: its objects are the caller's) into <paramref name="m"/>; a corrupted
    /// pointer is reported and never followed (the objects after it stay counted in use: lost, as when the list is
    /// cut under the lock); the rest of the list goes back to the slab.
    /// </summary>
    private void TakeDetached(KmemCacheNode* n, PageFrame* slab, void* obj, int free, Magazine* m, int want)
    {
        int taken = 0;
        while (obj != null && m->Count < want && taken < free)
        {
            void* next = GetFreePointer(_d, obj);
            if (next != null && ObjectIndex(slab, next) < 0)
            {
                RecordFreelistCorruption(slab, obj, next);
                next = null;
            }
            m->Objects[m->Count++] = obj;
            taken++;
            obj = next;
        }
        if (obj != null && taken < free) ReturnDetached(n, slab, obj, free - taken);
    }

    /// <summary>Splices the untaken rest of a detached free list (at most <paramref name="most"/> objects) back onto its slab.</summary>
    private void ReturnDetached(KmemCacheNode* n, PageFrame* slab, void* head, int most)
    {
        // Usually nothing was freed to the slab meanwhile: the rest becomes its free list as it is, unread (after a
        // burst of frees that is most of a slab whose lines left the cache long ago; its next refill reads it anyway).
        NativeSpinLock.Acquire(&n->ListLock);
        if (SlabPage.Freelist(slab) == null)
        {
            SlabPage.SetFreelist(slab, head);
            ReturnedToSlab(n, slab, most);
            NativeSpinLock.Release(&n->ListLock);
            return;
        }
        NativeSpinLock.Release(&n->ListLock);

        // Objects came back meanwhile: count the rest and find its tail outside the lock, then splice it in front of them.
        // A list longer than the slab's free count has a loop: cut it.
        int count = 1;
        void* tail = head;
        while (count < most)
        {
            void* next = GetFreePointer(_d, tail);
            if (next == null) break;
            if (ObjectIndex(slab, next) < 0)
            {
                RecordFreelistCorruption(slab, tail, next);
                break;
            }
            tail = next;
            count++;
        }
        NativeSpinLock.Acquire(&n->ListLock);
        FreeToSlab(n, slab, head, tail, count); // never empties it: the objects just taken stay in use
        NativeSpinLock.Release(&n->ListLock);
    }

    /// <summary>
    /// The partial slab a refill by <paramref name="owner"/> takes: within the first few, one that is nobody's or its own
    /// (objects next to another thread's live objects would share its cache lines). When there is none and the node
    /// holds only a few partial slabs, null: the caller grows a slab of its own, as a per-thread heap would. With many
    /// partial slabs, the first one anyway, so the memory other threads hold in them is used before the node grows.
    /// Node lock held.
    /// </summary>
    private static PageFrame* PickPartial(KmemCacheNode* n, int owner)
    {
        PageFrame* first = n->Partial;
        if (owner == 0) return first;
        PageFrame* slab = first;
        for (int i = 0; slab != null && i < OwnerScan; i++, slab = slab->Next)
        {
            int current = slab->MapCount;
            if (current == 0 || current == owner) return slab;
        }
        return n->NrPartial > ForeignPartialLimit ? first : null;
    }

    /// <summary>Partial slabs of other threads a node may hold before a refill takes one of them rather than growing.</summary>
    private const int ForeignPartialLimit = 32;

    /// <summary>
    /// Gives objects back to their slabs (free_to_partial_list in bulk); empty slabs beyond min_partial go to the page
    /// allocator. Runs of objects of one slab (a tree freed in the order it was built, say) are linked into a chain
    /// before the node lock is taken (build_detached_freelist), so under the lock each run costs one splice.
    /// </summary>
    private void FlushToSlabs(void** objects, int count)
    {
        const int Chunk = 128;
        var runs = stackalloc FreeRun[Chunk];
        for (int start = 0; start < count; start += Chunk)
        {
            int end = Math.Min(count, start + Chunk);
            int nRuns = 0;
            for (int i = start; i < end;)
            {
                PageFrame* slab = SlabOf(_memory, objects[i]);
                int j = i + 1;
                // Linked newest first, as pushing them one by one would: the last object freed heads the list.
                while (j < end && SlabOf(_memory, objects[j]) == slab)
                {
                    SetFreePointer(_d, objects[j], objects[j - 1]);
                    j++;
                }
                runs[nRuns++] = new FreeRun { Slab = slab, Head = objects[j - 1], Tail = objects[i], Count = j - i };
                i = j;
            }
            SpliceRuns(runs, nRuns);
        }
    }

    /// <summary>A chain of freed objects of one slab, linked through their free pointers except for the tail's.</summary>
    private struct FreeRun
    {
        public PageFrame* Slab;
        public void* Head;
        public void* Tail;
        public int Count;
    }

    private void SpliceRuns(FreeRun* runs, int nRuns)
    {
        const int MaxBatchEmpty = 64;
        PageFrame** empty = stackalloc PageFrame*[MaxBatchEmpty];
        int nEmpty = 0;
        KmemCacheNode* locked = null;
        for (int r = 0; r < nRuns; r++)
        {
            PageFrame* slab = runs[r].Slab;
            KmemCacheNode* n = NodeOf(slab);
            if (n != locked)
            {
                if (locked != null) NativeSpinLock.Release(&locked->ListLock);
                NativeSpinLock.Acquire(&n->ListLock);
                locked = n;
            }
            PageFrame* gone = FreeToSlab(n, slab, runs[r].Head, runs[r].Tail, runs[r].Count);
            if (gone != null)
            {
                if (nEmpty == MaxBatchEmpty)
                {
                    NativeSpinLock.Release(&locked->ListLock);
                    locked = null;
                    for (int e = 0; e < nEmpty; e++) DiscardSlab(empty[e]);
                    nEmpty = 0;
                }
                empty[nEmpty++] = gone;
            }
        }
        if (locked != null) NativeSpinLock.Release(&locked->ListLock);
        for (int e = 0; e < nEmpty; e++) DiscardSlab(empty[e]);
    }

    /// <summary>Frees every empty slab on every node, ignoring min_partial (the core of kmem_cache_shrink).</summary>
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
                if (SlabPage.InUse(slab) == 0)
                {
                    SlabPage.Remove(&n->Partial, slab);
                    n->NrPartial--;
                    n->NrSlabs--;
                    n->TotalObjects -= _d->Objects;
                    SlabPage.SetList(slab, SlabPage.ListNone);
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
}
