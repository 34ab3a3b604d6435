using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // The thread side of the slab layer (___slab_alloc, __slab_free, deactivate_slab, put_cpu_partial): what a thread
    // does when its fast path cannot, and what a drainer does to a thread's entry.

    /// <summary>
    /// The allocation slow path (___slab_alloc), inside the thread's context like everything that reads the arena: the
    /// thread's slabs, then the node's; a new slab when both are out, grown outside the context (the page allocator
    /// may run the shrinkers, which drain every context, this one included). Debug caches, node-bound requests and
    /// caches the fast paths do not serve take their objects from the node lists under the node lock.
    /// </summary>
    private void* AllocSlow(Gfp gfp, int node, int requestedSize)
    {
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        bool counted = false; // one slow path, however many times it goes round
        int site = 0;
        while (true)
        {
            bool locked;
            Enter(ctx);
            try
            {
                ObjectDisposedException.ThrowIf(_destroyed, this);
                if (!counted && _owner.FailslabActive && _owner.Failslab.ShouldFail(_d->ObjectSize, 0, gfp))
                    return AllocFailed(gfp, injected: true);
                // A cache the fast paths do not serve keeps every thread's entry empty (KmemCacheData.Key).
                locked = node >= 0 || _d->Key == 0;
                void* obj;
                if (locked)
                {
                    if (!counted) Interlocked.Increment(ref _d->AllocSlowPath);
                    if (!counted && _d->FastPath == 0 && _d->TrackOffset >= 0) site = _owner.CallSites.Capture();
                    obj = TakeFromNodesLocked(node, requestedSize, site);
                }
                else
                {
                    SlabCpu* c = EntryOf(ctx);
                    if (!counted) c->AllocSlowPath++;
                    obj = Refill(ctx, c);
                }
                counted = true;
                if (obj != null)
                {
                    // A debug kmalloc cache red-zones the bytes after the requested size: zero only what was asked for.
                    if ((gfp & Gfp.Zero) != 0)
                        NativeMemory.Clear(obj, (nuint)(_d->OrigSizeOffset >= 0 || !locked ? requestedSize : _d->ObjectSize));
                    return obj;
                }
            }
            finally
            {
                Exit(ctx);
            }
            PageFrame* slab = NewSlab(gfp, node);
            if (slab == null) return AllocFailed(gfp, injected: false);
            Enter(ctx);
            try
            {
                if (_destroyed)
                {
                    _pages.FreePages(slab, _d->Order);
                    throw new ObjectDisposedException(Name);
                }
                if (locked)
                {
                    // The page allocator may have fallen back to another node: take the object from where the slab
                    // went, or a node-bound request would grow slabs it can never use, forever.
                    int grown = AddNewSlabToNode(slab);
                    if (node >= 0) node = grown;
                }
                else
                {
                    AccountNewSlab(slab, owner: ctx->Id);
                    AddPartial(EntryOf(ctx), slab);
                }
            }
            finally
            {
                Exit(ctx);
            }
        }
    }

    /// <summary>
    /// Enters the calling thread's context for a slow path, waiting out a drain that holds it (a few microseconds):
    /// every slab operation runs inside it, so a drain, a destroy or a dispose waits for the operations under way.
    /// Not reentrant: the slow paths never nest.
    /// </summary>
    internal static void Enter(SlabThreadContext* ctx)
    {
        while (!ThreadCacheHeader.TryEnter(&ctx->Header))
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref ctx->Header.DrainRequested) != 0) spin.SpinOnce(sleep1Threshold: 30);
        }
    }

    internal static void Exit(SlabThreadContext* ctx) => ThreadCacheHeader.Exit(&ctx->Header);

    private void* AllocFailed(Gfp gfp, bool injected)
    {
        Interlocked.Increment(ref _d->AllocFailures);
        if (_d->Has(SlabFlags.Panic))
            throw new OutOfMemoryException($"kmem_cache_alloc: cache {Name} could not allocate an object ({(injected ? "failslab" : "out of memory")}).");
        _ = gfp;
        return null;
    }

    /// <summary>The calling thread's entry for this cache, set up on first use (inside the context).</summary>
    private SlabCpu* EntryOf(SlabThreadContext* ctx)
    {
        SlabCpu* c = SlabCpus.EntryMaking(ctx, _d->CpuIndex);
        if (c->Key != _d->LiveKey)
        {
            Debug.Assert(c->Freelist == null && c->Slab == null && c->Partial == null && c->Full == null, "an entry is flushed before its index is reused");
            *c = default;
            c->Key = _d->LiveKey;
            c->Cache = _d;
            if (ctx->Id >= _d->HintCapacity) GrowRemoteHints(ctx->Id);
        }
        return c;
    }

    private readonly Lock _hintLock = new();
    private readonly List<nint> _oldHints = new();

    /// <summary>
    /// Makes room in <see cref="KmemCacheData.RemoteHints"/> for thread context <paramref name="id"/>. Remote freers
    /// read the capacity, then the array: the array is published first, and old arrays stay until the cache goes.
    /// </summary>
    private void GrowRemoteHints(int id)
    {
        lock (_hintLock)
        {
            int capacity = _d->HintCapacity;
            if (id < capacity) return;
            int grown = Math.Max(capacity * 2, id + 1);
            var hints = (byte*)NativeMemory.AllocZeroed((nuint)grown);
            Buffer.MemoryCopy(_d->RemoteHints, hints, grown, capacity);
            _oldHints.Add((nint)_d->RemoteHints);
            Volatile.Write(ref *(nint*)&_d->RemoteHints, (nint)hints);
            Volatile.Write(ref _d->HintCapacity, grown);
        }
    }

    /// <summary>
    /// Finds the thread an object when its list is empty: the current slab's remote frees, then its partial slabs,
    /// then the node's; the exhausted current slab goes to the thread's full list on the way. Null when there is no free
    /// object anywhere but in other threads' slabs. Inside the context.
    /// </summary>
    private void* Refill(SlabThreadContext* ctx, SlabCpu* c)
    {
        while (true)
        {
            if (c->Freelist != null)
            {
                void* obj = PopChecked(c);
                if (obj != null) return obj;
            }
            PageFrame* slab = c->Slab;
            if (slab != null)
            {
                long state = SlabPage.ReadState(slab);
                if (SlabPage.RemoteCount(state) > 0)
                {
                    c->Freelist = TakeRemote(slab);
                    continue;
                }
                c->Slab = null;
                c->SlabBase = null;
                AddFull(c, slab);
            }
            // Other threads freed into the thread's full slabs (the hint says so): those join the partial list first,
            // before the node's lock or a new slab (a producer whose objects others free keeps reusing its slabs).
            if (c->Partial == null && _d->RemoteHints[ctx->Id] != 0) CollectRemotelyFreedFull(ctx, c);
            slab = c->Partial;
            if (slab != null)
            {
                ListRemove(ref c->Partial, ref c->PartialTail, slab);
                c->NrPartial--;
            }
            else
            {
                slab = TakeFromNode(ctx->Id);
                if (slab == null) return null;
            }
            MakeCurrent(c, slab);
            c->Refills++;
        }
    }

    /// <summary>Pops the first object of the thread's list in the slow path, reporting (and cutting the list at) a link that does not name an object of the slab.</summary>
    private void* PopChecked(SlabCpu* c)
    {
        void* obj = c->Freelist;
        void** location = FreePointerAddress(_d, obj);
        void* next = DecodeFreePointer(_d, location);
        if (next != null && !IsSlot(_d, (nuint)next - (nuint)c->SlabBase - (nuint)_d->RedLeftPad))
        {
            // Never follow a corrupted pointer: the objects after it stay in use (lost), as SLUB's get_freepointer cut.
            RecordFreelistCorruption(c->Slab, obj, next);
            next = null;
        }
        c->Freelist = next;
        *location = null;
        return obj;
    }

    /// <summary>Makes an owned slab the thread's current one: its free list becomes the thread's (inside the context).</summary>
    private void MakeCurrent(SlabCpu* c, PageFrame* slab)
    {
        Debug.Assert(SlabPage.Owner(SlabPage.ReadState(slab)) != 0, "a current slab is owned");
        c->Slab = slab;
        c->SlabBase = SlabBase(slab);
        // An empty slab's list is in the order its objects were freed, scattered over its lines; relinked in address
        // order (one sequential pass) its allocations walk the slab as the prefetcher expects instead of chasing cold lines.
        if (SlabPage.FreeCount(slab) == _d->Objects && _ctor == null) Relink(slab);
        c->Freelist = SlabPage.Freelist(slab);
        SlabPage.SetFreelist(slab, null);
        SlabPage.SetFreeCount(slab, 0);
    }

    /// <summary>Links every object of an empty slab in address order (its free list; no object is in use).</summary>
    private void Relink(PageFrame* slab)
    {
        byte* first = SlabBase(slab) + _d->RedLeftPad;
        void* next = null;
        for (int i = _d->Objects - 1; i >= 0; i--)
        {
            void* obj = first + (long)i * _d->Size;
            SetFreePointer(obj, next);
            next = obj;
        }
        SlabPage.SetFreelist(slab, next);
    }

    /// <summary>Takes an owned slab's whole remote list with one exchange; its head (the list keeps its links).</summary>
    private void* TakeRemote(PageFrame* slab)
    {
        long state = SlabPage.ReadState(slab);
        long old = Interlocked.Exchange(ref SlabPage.State(slab), SlabPage.WithoutRemote(state));
        int head = SlabPage.RemoteHead(old);
        return head == 0 ? null : ObjectAt(slab, head - 1);
    }

    /// <summary>
    /// Puts an owned slab with free objects on the thread's partial list (put_cpu_partial). The list has no bound: it
    /// holds only slabs the thread allocated from, and the thread allocates from it before it takes from anywhere else
    /// (a bound would send a thread with a large live set to the node's lock for the slabs it frees into). Inside the context.
    /// </summary>
    private void AddPartial(SlabCpu* c, PageFrame* slab)
    {
        ListPush(ref c->Partial, ref c->PartialTail, slab);
        c->NrPartial++;
    }

    /// <summary>
    /// Puts an exhausted owned slab on the thread's full list, where a free of one of its objects by this thread finds
    /// it without an atomic. Inside the context.
    /// </summary>
    private static void AddFull(SlabCpu* c, PageFrame* slab)
    {
        Debug.Assert(SlabPage.FreeCount(slab) == 0, "a slab on the full list has no object on its own free list");
        slab->FlagsAndZone |= SlabPage.OnThreadFullList;
        ListPush(ref c->Full, ref c->FullTail, slab);
        c->NrFull++;
    }

    /// <summary>
    /// Moves every slab of the thread's full list that other threads freed objects into to its partial list, after
    /// clearing the hint that said there were some (a free that comes after the clear sets it again). Inside the context.
    /// </summary>
    private void CollectRemotelyFreedFull(SlabThreadContext* ctx, SlabCpu* c)
    {
        Volatile.Write(ref _d->RemoteHints[ctx->Id], 0);
        Interlocked.MemoryBarrier();
        PageFrame* slab = c->FullTail;
        while (slab != null)
        {
            PageFrame* newer = slab->Prev;
            if (SlabPage.RemoteCount(SlabPage.ReadState(slab)) != 0)
            {
                RemoveFull(c, slab);
                AddPartial(c, slab);
            }
            slab = newer;
        }
    }

    private static void RemoveFull(SlabCpu* c, PageFrame* slab)
    {
        slab->FlagsAndZone &= ~SlabPage.OnThreadFullList;
        ListRemove(ref c->Full, ref c->FullTail, slab);
        c->NrFull--;
    }

    /// <summary>
    /// The thread freed onto a slab it owns (not its current one) the first object there: a slab on its full list moves
    /// to its partial list. Inside the context.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void FreedIntoOwnedSlab(SlabCpu* c, PageFrame* slab)
    {
        if ((slab->FlagsAndZone & SlabPage.OnThreadFullList) == 0) return;
        RemoveFull(c, slab);
        ListPush(ref c->Partial, ref c->PartialTail, slab);
        c->NrPartial++;
    }

    private static void ListPush(ref PageFrame* head, ref PageFrame* tail, PageFrame* slab)
    {
        slab->Prev = null;
        slab->Next = head;
        if (head != null) head->Prev = slab;
        else tail = slab;
        head = slab;
    }

    private static void ListRemove(ref PageFrame* head, ref PageFrame* tail, PageFrame* slab)
    {
        if (slab->Prev != null) slab->Prev->Next = slab->Next; else head = slab->Next;
        if (slab->Next != null) slab->Next->Prev = slab->Prev; else tail = slab->Prev;
        slab->Next = slab->Prev = null;
    }

    /// <summary>Frees an object after the fast path declined: checks everything and reports misuse, then frees.</summary>
    internal void FreeSlow(void* obj)
    {
        if (obj == null) return;
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        Enter(ctx);
        try
        {
            ObjectDisposedException.ThrowIf(_destroyed, this);
            PageFrame* slab = SlabOf(_memory, obj);
            if (slab == null || (slab->FlagsAndZone & (uint)PageFlags.Slab) == 0 || slab->Private != (nuint)_d)
                ThrowNotThisCache(obj, slab);
            FreeChecked(ctx, slab, obj);
        }
        finally
        {
            Exit(ctx);
        }
    }

    /// <summary>
    /// Frees an object of this cache, <paramref name="slab"/> being its slab (__slab_free): refuses an interior pointer
    /// and a double free with nothing changed, then frees to the calling thread when it owns the slab or owned it last,
    /// else onto the slab's remote list. Inside the context.
    /// </summary>
    internal void FreeChecked(SlabThreadContext* ctx, PageFrame* slab, void* obj)
    {
        if (ObjectIndex(slab, obj) < 0) ThrowInteriorPointer(slab, obj);
        if (_d->FastPath == 0)
        {
            FreeDebug(slab, obj);
            Interlocked.Increment(ref _d->FreeSlowPath);
            return;
        }
        void** location = FreePointerAddress(_d, obj);
        if (_d->SerializedFree != 0) ClaimForFree(slab, obj, location);
        else if (LooksFree(_d, location, (nuint)ObjectAt(slab, 0))) ThrowDoubleFree(slab, obj, "it is already free");
        if (_d->Key != 0)
        {
            SlabCpu* c = EntryOf(ctx);
            c->FreeSlowPath++;
            if (FreeOwned(ctx, c, slab, obj, location)) return;
            c->RemoteFrees++;
        }
        else
        {
            Interlocked.Increment(ref _d->FreeSlowPath);
        }
        FreeRemote(slab, obj, location);
    }

    /// <summary>
    /// Frees to the calling thread when it owns the slab (its current slab, or one on its partial or full list) or owned
    /// it last and the slab floats (it takes it back with one compare-exchange onto its partial list). False when
    /// another thread owns it, another thread floated it, or it is on a node list. Inside the context.
    /// </summary>
    private bool FreeOwned(SlabThreadContext* ctx, SlabCpu* c, PageFrame* slab, void* obj, void** location)
    {
        if (slab == c->Slab)
        {
            *location = EncodeFreePointer(_d, location, c->Freelist);
            c->Freelist = obj;
            return true;
        }
        long state = SlabPage.ReadState(slab);
        if (SlabPage.IsFloating(state) && SlabPage.Owner(state) == ctx->Id)
        {
            Debug.Assert(SlabPage.RemoteCount(state) == 0 && SlabPage.FreeCount(slab) == 0, "a floating slab has no free object");
            if (Interlocked.CompareExchange(ref SlabPage.State(slab), SlabPage.Owned(ctx->Id), state) != state) return false;
            c->Claims++;
            *location = EncodeFreePointer(_d, location, null);
            SlabPage.SetFreelist(slab, obj);
            SlabPage.SetFreeCount(slab, 1);
            AddPartial(c, slab);
            return true;
        }
        if (SlabPage.OwnerWord(state) != ctx->Id) return false;
        *location = EncodeFreePointer(_d, location, SlabPage.Freelist(slab));
        SlabPage.SetFreelist(slab, obj);
        if (slab->MapCount++ == 0) FreedIntoOwnedSlab(c, slab);
        return true;
    }

    /// <summary>
    /// Pushes an object onto its slab's remote list with one compare-exchange (the owner, or whoever next takes the slab
    /// from its node, collects the list). A floating slab this thread may not take back (another thread floated it)
    /// goes to its node's partial list with the object instead, so a thread that frees what others allocate never
    /// collects their slabs. An object that empties a slab on a node list may
    /// take the slab back to the page allocator.
    /// </summary>
    private void FreeRemote(PageFrame* slab, void* obj, void** location)
    {
        int index = ObjectIndex(slab, obj);
        while (true)
        {
            long state = SlabPage.ReadState(slab);
            if (SlabPage.IsFloating(state))
            {
                if (FloatingToNode(slab, obj, location, state)) return;
                continue;
            }
            int head = SlabPage.RemoteHead(state);
            *location = EncodeFreePointer(_d, location, head == 0 ? null : ObjectAt(slab, head - 1));
            long pushed = SlabPage.PushRemote(state, index);
            if (Interlocked.CompareExchange(ref SlabPage.State(slab), pushed, state) != state) continue;
            if (SlabPage.OnNode(state))
            {
                if (SlabPage.FreeCount(slab) + SlabPage.RemoteCount(pushed) >= _d->Objects) DiscardIfEmptyOnNode(slab);
            }
            else if (SlabPage.RemoteCount(state) == 0)
            {
                NoteRemoteFree(SlabPage.Owner(state));
            }
            return;
        }
    }

    /// <summary>
    /// Tells the slab's owner that another thread freed into one of its slabs that had no remote free yet: the slab may be
    /// on its full list, which the owner looks through only when told (a plain store of a byte only the owner clears;
    /// the owner's id is live while it owns slabs, and a thread that took over a retired id finds a hint it can ignore).
    /// </summary>
    private void NoteRemoteFree(int owner)
    {
        if ((uint)owner < (uint)Volatile.Read(ref _d->HintCapacity)) Volatile.Write(ref _d->RemoteHints[owner], 1);
    }

    /// <summary>
    /// Serialized frees: claims the object by compare-exchanging its free pointer word from what it held to the free
    /// form, so of two threads freeing it at once exactly one gets past here; the other sees a free object.
    /// </summary>
    private void ClaimForFree(PageFrame* slab, void* obj, void** location)
    {
        var word = (long*)location;
        long observed = Volatile.Read(ref *word);
        long free = (long)EncodeFreePointer(_d, location, null);
        if (LooksFree(_d, location, (nuint)ObjectAt(slab, 0)) ||
            Interlocked.CompareExchange(ref *word, free, observed) != observed)
            ThrowDoubleFree(slab, obj, "it is already free (or being freed by another thread)");
    }

    /// <summary>
    /// Flushes a thread's entry (flush_slab and unfreeze_partials): the current slab and every partial slab go to their
    /// nodes, free objects and all. Called by a drainer that holds the thread's context, or when the context retires.
    /// </summary>
    internal static void FlushEntry(SlabCpu* c)
    {
        if (c->Slab == null && c->Partial == null && c->Full == null) return;
        // A cache collected without being destroyed (its system was dropped, not disposed): its slabs went with it.
        if (c->Cache->Handle == 0 || GCHandle.FromIntPtr(c->Cache->Handle).Target is not KmemCache cache)
        {
            RetireEntry(c);
            return;
        }
        cache.FlushEntryOf(c);
    }

    private void FlushEntryOf(SlabCpu* c)
    {
        PageFrame* slab = c->Slab;
        if (slab != null)
        {
            int count = CountChain(slab, c->Freelist);
            SlabPage.SetFreelist(slab, c->Freelist);
            SlabPage.SetFreeCount(slab, count);
            c->Freelist = null;
            c->Slab = null;
            c->SlabBase = null;
            Unfreeze(slab);
        }
        while (c->Partial != null)
        {
            PageFrame* partial = c->Partial;
            ListRemove(ref c->Partial, ref c->PartialTail, partial);
            c->NrPartial--;
            Unfreeze(partial);
        }
        while (c->Full != null)
        {
            PageFrame* full = c->Full;
            RemoveFull(c, full);
            Unfreeze(full);
        }
        c->Flushes++;
    }

    /// <summary>
    /// Counts a thread's list of a slab's objects, cutting it at a link that does not name an object of the slab or
    /// when it is longer than the slab (a loop): the objects after the cut stay in use.
    /// </summary>
    private int CountChain(PageFrame* slab, void* head)
    {
        int count = 0;
        for (void* p = head; p != null && count < _d->Objects;)
        {
            count++;
            void** location = FreePointerAddress(_d, p);
            void* next = DecodeFreePointer(_d, location);
            if (next != null && ObjectIndex(slab, next) < 0)
            {
                RecordFreelistCorruption(slab, p, next);
                *location = EncodeFreePointer(_d, location, null);
                break;
            }
            if (count == _d->Objects && next != null)
            {
                *location = EncodeFreePointer(_d, location, null);
                break;
            }
            p = next;
        }
        return count;
    }

    /// <summary>Folds a retiring (or destroyed cache's) entry's counters into its cache and makes it fresh. The entry is flushed.</summary>
    internal static void RetireEntry(SlabCpu* c)
    {
        KmemCacheData* d = c->Cache;
        if (d != null && c->Key == d->LiveKey) FoldCounters(d, c);
        *c = default;
        c->Key = SlabCpu.FreshKey;
    }

    private static void FoldCounters(KmemCacheData* d, SlabCpu* c)
    {
        Interlocked.Add(ref d->RetiredAllocFastPath, c->AllocFastPath);
        Interlocked.Add(ref d->RetiredFreeFastPath, c->FreeFastPath);
        Interlocked.Add(ref d->AllocSlowPath, c->AllocSlowPath);
        Interlocked.Add(ref d->FreeSlowPath, c->FreeSlowPath);
        Interlocked.Add(ref d->RetiredRefills, c->Refills);
        Interlocked.Add(ref d->RetiredFlushes, c->Flushes);
        Interlocked.Add(ref d->RetiredRemoteFrees, c->RemoteFrees);
        Interlocked.Add(ref d->RetiredClaims, c->Claims);
    }

    private void ThrowNotThisCache(void* obj, PageFrame* slab)
    {
        if (slab == null)
            throw new MemoryCorruptionException($"kmem_cache_free({Name}): 0x{(nuint)obj:x} is not in the arena.", (nuint)obj);
        if ((slab->FlagsAndZone & (uint)PageFlags.Slab) == 0)
            throw new MemoryCorruptionException(
                $"kmem_cache_free({Name}): 0x{(nuint)obj:x} is not a slab object (page pfn 0x{slab->Pfn:x}: {slab->Describe()}).", (nuint)obj);
        var other = (KmemCacheData*)slab->Private;
        string otherName = other->Handle != 0 && GCHandle.FromIntPtr(other->Handle).Target is KmemCache k ? k.Name : "?";
        throw new MemoryCorruptionException(
            $"kmem_cache_free({Name}): wrong cache: object 0x{(nuint)obj:x} belongs to cache {otherName} (slab pfn 0x{slab->Pfn:x}).", (nuint)obj);
    }

    private void ThrowInteriorPointer(PageFrame* slab, void* obj)
        => throw new MemoryCorruptionException(
            $"kmem_cache_free({Name}): 0x{(nuint)obj:x} is not the start of an object (interior pointer; slab pfn 0x{slab->Pfn:x} at 0x{(nuint)SlabBase(slab):x}, object size {_d->Size}).",
            (nuint)obj);

    private void ThrowDoubleFree(PageFrame* slab, void* obj, string why)
        => throw new MemoryCorruptionException(
            $"kmem_cache_free({Name}): double free of object 0x{(nuint)obj:x}: {why} (slab pfn 0x{slab->Pfn:x}).", (nuint)obj);
}
