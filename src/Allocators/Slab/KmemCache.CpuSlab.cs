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

    private void* AllocSlow(Gfp gfp, int node, int requestedSize)
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        if (_owner.FailslabActive && _owner.Failslab.ShouldFail(_d->ObjectSize, 0, gfp))
            return AllocFailed(gfp, injected: true);
        // A cache the fast paths do not serve keeps every thread's entry empty (KmemCacheData.Key).
        if (node >= 0 || _d->Key == 0) return AllocLocked(gfp, node, requestedSize, count: true);

        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        bool counted = false; // one slow path, however many times it goes round
        while (true)
        {
            if (!ThreadCacheHeader.TryEnter(&ctx->Header)) return AllocLocked(gfp, -1, requestedSize, count: !counted);
            void* obj = null;
            bool closed = _d->Key == 0;   // destroyed, or fault injection turned on meanwhile
            try
            {
                if (!closed)
                {
                    SlabCpu* c = EntryOf(ctx);
                    if (!counted) c->AllocSlowPath++;
                    counted = true;
                    obj = Refill(ctx, c);
                }
            }
            finally
            {
                ThreadCacheHeader.Exit(&ctx->Header);
            }
            if (closed)
            {
                ObjectDisposedException.ThrowIf(_destroyed, this);
                return AllocLocked(gfp, -1, requestedSize, count: !counted);
            }
            if (obj != null)
            {
                // A debug kmalloc cache red-zones the bytes after the requested size: zero only what was asked for.
                if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear(obj, (nuint)requestedSize);
                return obj;
            }
            // Nothing left in this thread's slabs or the node's: grow one, outside the context (the page allocator may
            // run the shrinkers, which drain every context, this one included).
            PageFrame* slab = NewSlab(gfp, -1);
            if (slab == null) return AllocFailed(gfp, injected: false);
            AccountNewSlab(slab, owner: ctx->Id);
            if (!ThreadCacheHeader.TryEnter(&ctx->Header))
            {
                Unfreeze(slab);
                continue;
            }
            try
            {
                if (_d->Key == 0) Unfreeze(slab);
                else AddPartial(EntryOf(ctx), slab);
            }
            finally
            {
                ThreadCacheHeader.Exit(&ctx->Header);
            }
        }
    }

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
        }
        return c;
    }

    /// <summary>
    /// Finds the thread an object when its list is empty: the current slab's remote frees, then its partial slabs,
    /// then the node's; the exhausted current slab floats away on the way. Null when there is no free object anywhere
    /// but in other threads' slabs. Inside the context.
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
                // Every object of the current slab is out: it waits on the thread's full list for frees (the oldest
                // there floats, with no owner and on no list, until a free claims it).
                c->Slab = null;
                c->SlabBase = null;
                AddFull(c, slab);
            }
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
        c->Freelist = SlabPage.Freelist(slab);
        SlabPage.SetFreelist(slab, null);
        SlabPage.SetFreeCount(slab, 0);
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
    /// Puts an owned slab with free objects on the thread's partial list (put_cpu_partial); when the list is longer than
    /// <see cref="KmemCacheData.MaxPartial"/> the oldest one goes to its node. Inside the context.
    /// </summary>
    private void AddPartial(SlabCpu* c, PageFrame* slab)
    {
        ListPush(ref c->Partial, ref c->PartialTail, slab);
        if (++c->NrPartial <= _d->MaxPartial) return;
        PageFrame* oldest = c->PartialTail;
        ListRemove(ref c->Partial, ref c->PartialTail, oldest);
        c->NrPartial--;
        Unfreeze(oldest);
    }

    /// <summary>
    /// Puts an owned slab with no free object on the thread's full list; when the list is longer than
    /// <see cref="KmemCacheData.MaxPartial"/> the oldest one floats, or joins the partial list when remote frees reached
    /// it meanwhile. Inside the context.
    /// </summary>
    private void AddFull(SlabCpu* c, PageFrame* slab)
    {
        Debug.Assert(SlabPage.FreeCount(slab) == 0, "a slab on the full list has no object on its own free list");
        slab->FlagsAndZone |= SlabPage.OnThreadFullList;
        ListPush(ref c->Full, ref c->FullTail, slab);
        if (++c->NrFull <= _d->MaxPartial) return;
        PageFrame* oldest = c->FullTail;
        RemoveFull(c, oldest);
        long state = SlabPage.ReadState(oldest);
        if (SlabPage.RemoteCount(state) == 0 &&
            Interlocked.CompareExchange(ref SlabPage.State(oldest), SlabPage.MakeState(0, false, 0, 0), state) == state)
            return;
        AddPartial(c, oldest);
    }

    private static void RemoveFull(SlabCpu* c, PageFrame* slab)
    {
        slab->FlagsAndZone &= ~SlabPage.OnThreadFullList;
        ListRemove(ref c->Full, ref c->FullTail, slab);
        c->NrFull--;
    }

    /// <summary>
    /// The thread freed the first object onto the free list of a slab it owns (not its current one): a slab on its full
    /// list moves to its partial list. Inside the context.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void FreedIntoOwnedSlab(SlabCpu* c, PageFrame* slab)
    {
        if ((slab->FlagsAndZone & SlabPage.OnThreadFullList) == 0) return;
        RemoveFull(c, slab);
        FromData(c->Cache).AddPartial(c, slab);
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
    private void FreeSlow(void* obj)
    {
        if (obj == null) return;
        ObjectDisposedException.ThrowIf(_destroyed, this);
        PageFrame* slab = SlabOf(_memory, obj);
        if (slab == null || (slab->FlagsAndZone & (uint)PageFlags.Slab) == 0 || slab->Private != (nuint)_d)
            ThrowNotThisCache(obj, slab);
        FreeChecked(slab, obj);
    }

    /// <summary>
    /// Frees an object of this cache, <paramref name="slab"/> being its slab: refuses an interior pointer and a double
    /// free with nothing changed, then frees to the calling thread when it owns the slab or can claim it, else onto the
    /// slab's remote list (__slab_free).
    /// </summary>
    private void FreeChecked(PageFrame* slab, void* obj)
    {
        int index = ObjectIndex(slab, obj);
        if (index < 0) ThrowInteriorPointer(slab, obj);
        if (_d->FastPath == 0)
        {
            FreeDebug(slab, obj);
            Interlocked.Increment(ref _d->FreeSlowPath);
            return;
        }
        void** location = FreePointerAddress(_d, obj);
        if (_d->SerializedFree != 0) ClaimForFree(slab, obj, location);
        else if (LooksFree(_d, location, (nuint)ObjectAt(slab, 0))) ThrowDoubleFree(slab, obj, "it is already free");

        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        if (ThreadCacheHeader.TryEnter(&ctx->Header))
        {
            bool done = false;
            try
            {
                if (_d->Key != 0)
                {
                    SlabCpu* c = EntryOf(ctx);
                    c->FreeSlowPath++;
                    done = FreeOwned(ctx, c, slab, obj, location);
                    if (!done) c->RemoteFrees++;
                }
            }
            finally
            {
                ThreadCacheHeader.Exit(&ctx->Header);
            }
            if (done) return;
        }
        else
        {
            Interlocked.Increment(ref _d->FreeSlowPath);
        }
        FreeRemote(slab, obj, location);
    }

    /// <summary>
    /// Frees to the calling thread when it owns the slab (its current slab, or one on its partial list) or the slab
    /// floats and the thread claims it (one compare-exchange; the slab joins its partial list). False when another
    /// thread owns it or it is on a node list. Inside the context.
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
        int owner = SlabPage.Owner(state);
        if (owner == 0 && !SlabPage.OnNode(state))
        {
            Debug.Assert(SlabPage.RemoteCount(state) == 0 && SlabPage.FreeCount(slab) == 0, "a floating slab has no free object");
            if (Interlocked.CompareExchange(ref SlabPage.State(slab), SlabPage.MakeState(ctx->Id, false, 0, 0), state) != state) return false;
            c->Claims++;
            *location = EncodeFreePointer(_d, location, null);
            SlabPage.SetFreelist(slab, obj);
            SlabPage.SetFreeCount(slab, 1);
            AddPartial(c, slab);
            return true;
        }
        if (owner != ctx->Id) return false;
        *location = EncodeFreePointer(_d, location, SlabPage.Freelist(slab));
        SlabPage.SetFreelist(slab, obj);
        if (slab->MapCount++ == 0) FreedIntoOwnedSlab(c, slab);
        return true;
    }

    /// <summary>
    /// Pushes an object onto its slab's remote list with one compare-exchange (the owner, or whoever next takes the slab
    /// from its node, collects the list). A floating slab that this thread could not claim (its context held by a drainer)
    /// goes to its node's partial list with the object instead. An object that empties a slab on a node list may
    /// take the slab back to the page allocator.
    /// </summary>
    private void FreeRemote(PageFrame* slab, void* obj, void** location)
    {
        int index = ObjectIndex(slab, obj);
        while (true)
        {
            long state = SlabPage.ReadState(slab);
            int owner = SlabPage.Owner(state);
            bool onNode = SlabPage.OnNode(state);
            if (owner == 0 && !onNode)
            {
                if (FloatingToNode(slab, obj, location, state)) return;
                continue;
            }
            int head = SlabPage.RemoteHead(state);
            *location = EncodeFreePointer(_d, location, head == 0 ? null : ObjectAt(slab, head - 1));
            int count = SlabPage.RemoteCount(state) + 1;
            long updated = SlabPage.MakeState(owner, onNode, index + 1, count);
            if (Interlocked.CompareExchange(ref SlabPage.State(slab), updated, state) != state) continue;
            if (owner == 0 && SlabPage.FreeCount(slab) + count >= _d->Objects) DiscardIfEmptyOnNode(slab);
            return;
        }
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
