using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Common;
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
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(Gfp gfp, int node, int requestedSize)
    {
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        int sampleBits = Volatile.Read(ref ctx->Header.DrainRequested) & (ThreadCacheHeader.SampleBit | ThreadCacheHeader.CountedSampleBit);
        bool countedSample = (sampleBits & ThreadCacheHeader.CountedSampleBit) != 0
            || (_kfenceRate > 0 && node < 0 && _d->Key == 0 && CountLockedSample());
        if (sampleBits != 0 || countedSample)
        {
            void* sampled = TakeSample(ctx, gfp, node, requestedSize, countedSample);
            if (sampled != null) return sampled;
        }
        bool counted = false; // one slow path, however many times it goes round
        int site = 0;
        while (true)
        {
            bool locked;
            long retirements = SlabCpus.Retirements;
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
                    if (!counted && _d->FastPath == 0 && _recordsSites) site = _owner.CallSites.Capture();
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
                    if ((gfp & Gfp.Zero) != 0 || _initOnAlloc)
                        NativeMemory.Clear(obj, (nuint)(_d->OrigSizeOffset >= 0 || !_initOnAlloc ? requestedSize : _d->ObjectSize));
                    return obj;
                }
            }
            finally
            {
                Exit(ctx);
            }
            // An exited thread's slabs may hold what this one needs: retire it and look again before growing, also
            // when another thread's scan (at most one a millisecond) retired it since this one looked.
            if (!locked && (SlabCpus.RetireExited() || SlabCpus.Retirements != retirements)) continue;
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
    /// The thread saw a sample bit, or this cache's count chose the allocation (<paramref name="counted"/>): clears the
    /// bits and lets KFENCE take this allocation (kfence_alloc) when its sampling asked for it: a timed pool when it is
    /// armed, a counting one only on a count of its own (another system's timer sets the timed bit in every thread).
    /// Node-bound requests and caches KFENCE does not sample (<see cref="Samplable"/>) stay with the slabs.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* TakeSample(SlabThreadContext* ctx, Gfp gfp, int node, int requestedSize, bool counted)
    {
        Interlocked.And(ref ctx->Header.DrainRequested, ~(ThreadCacheHeader.SampleBit | ThreadCacheHeader.CountedSampleBit));
        if (node >= 0 || requestedSize > PageFrame.PageSize || !Samplable(_ctor != null) || _destroyed || _owner.Kfence is not { } kfence) return null;
        if (kfence.SampleRate > 0 ? !counted : !kfence.Armed) return null;
        // kmalloc promises natural alignment only to power-of-two sizes; other caches keep their own.
        int align = _d->KmallocIndex >= 0 ? (BitOperations.IsPow2(requestedSize) ? requestedSize : 8) : Math.Max(_d->Align, 8);
        void* obj = kfence.TryAlloc((nint)_d, Name, requestedSize, align, _initOnAlloc ? gfp | Gfp.Zero : gfp, _owner.CallSites.Name(_owner.CallSites.Capture()));
        if (obj != null) Interlocked.Increment(ref _d->AllocSlowPath); // a slow-path allocation, as it is counted in SLUB
        return obj;
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
            while ((Volatile.Read(ref ctx->Header.DrainRequested) & ThreadCacheHeader.DrainBit) != 0) spin.SpinOnce(sleep1Threshold: 30);
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
            Debug.Assert(c->Slab == null && c->Partial == null && c->Full == null, "an entry is flushed before its index is reused");
            *c = default;
            c->Key = _d->LiveKey;
            c->Cache = _d;
            c->Modes = EntryModes;
            if (_randomFreelist || _kfenceRate > 0) c->Rng = (ulong)Random.Shared.NextInt64() | 1;
            if (_kfenceRate > 0)
            {
                c->SampleRate = _kfenceRate;
                DrawSampleCountdown(c);
            }
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
    /// Finds the thread an object when its current word is empty: the rest of its current slab (other threads' frees
    /// into it too), then its partial slabs, then the slabs of its full list that other threads freed into, then the
    /// node's; the exhausted current slab goes to the thread's full list on the way. Null when there is no free object
    /// anywhere but in other threads' slabs. Inside the context.
    /// </summary>
    private void* Refill(SlabThreadContext* ctx, SlabCpu* c)
    {
        // The stack first, always: the bitmaps are only taken from while it is empty (its objects are free there too).
        if (c->Count > 0) return PopStack(c, c->Count - 1);
        while (true)
        {
            void* obj = AllocFromThreadSlabs(c, _d);
            if (obj != null) return obj;
            if (c->Slab != null)
            {
                AddFull(c, c->Slab);
                c->Slab = null;
                c->Word = null;
            }
            // Other threads freed into the thread's full slabs (the hint says so): those join the partial list first,
            // before the node's lock or a new slab (a producer whose objects others free keeps reusing its slabs).
            if (c->Partial == null && _d->RemoteHints[ctx->Id] != 0) CollectRemotelyFreedFull(ctx, c);
            if (c->Partial != null) continue;
            PageFrame* slab = TakeFromNode(ctx->Id);
            if (slab == null) return null;
            MakeCurrent(c, slab, _d, SlabBase(slab));
            c->Refills++;
        }
    }

    /// <summary>
    /// The cheap half of the allocation slow path, called by the fast path (inside the context) when the thread's
    /// current word is empty: another word of the current slab, the current slab's remote frees, or the next slab of the
    /// thread's partial list, without the general slow path's set-up. Null when none of them has an object.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void* AllocFromThreadSlabs(SlabCpu* c, KmemCacheData* d)
    {
        while (true)
        {
            PageFrame* slab = c->Slab;
            if (slab != null && NextFreeWord(c, d)) return (c->Modes & SlabCpu.RandomMode) != 0 ? TakeRandom(c, d) : TakeBit(c, d);
            PageFrame* next = c->Partial;
            if (next == null) return null;
            if (slab != null)
            {
                AddFull(c, slab);
                c->Slab = null;
                c->Word = null;
            }
            PopPartial(c);
            byte* slabBase = d->ArenaBytes != 0 ? (byte*)d->ArenaBase + SlabOffsetInArena(d->MemMap, next) : FromData(d).SlabBase(next);
            MakeCurrent(c, next, d, slabBase);
            c->Refills++;
        }
    }

    /// <summary>Pops the lowest bit of the current word (which has one).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void* TakeBit(SlabCpu* c, KmemCacheData* d)
    {
        ulong free = *c->Word;
        *c->Word = free & (free - 1);
        return c->WordBase + (nuint)BitOperations.TrailingZeroCount(free) * (nuint)(uint)d->Size;
    }

    /// <summary>
    /// Points the thread at the first word of its current slab's local bitmap with a free object, after taking in the
    /// slab's remote frees when the local bitmap has none; false when the slab has no free object at all.
    /// </summary>
    private static bool NextFreeWord(SlabCpu* c, KmemCacheData* d)
    {
        ulong* local = c->Bitmap;
        for (int pass = 0; pass < 2; pass++)
        {
            for (int i = 0; i < d->Words; i++)
            {
                if (local[i] == 0) continue;
                c->Word = local + i;
                c->WordBase = c->SlabObjects + (long)i * 64 * d->Size;
                return true;
            }
            if (pass == 0 && SlabPage.CollectRemote(local, local + d->RemoteDelta, d->Words) == 0) return false;
        }
        return false;
    }

    /// <summary>
    /// Makes an owned slab (whose first byte is at <paramref name="slabBase"/>) the thread's current one: the thread
    /// allocates from its local bitmap from here on. Inside the context.
    /// </summary>
    private static void MakeCurrent(SlabCpu* c, PageFrame* slab, KmemCacheData* d, byte* slabBase)
    {
        Debug.Assert(SlabPage.Owner(SlabPage.ReadState(slab)) != 0 && !SlabPage.IsFloating(SlabPage.ReadState(slab)), "a current slab is owned");
        c->Slab = slab;
        c->SlabObjects = slabBase + d->RedLeftPad;
        c->Bitmap = LocalBitmapAny(d, slab);
        c->Word = c->Bitmap;
        c->WordBase = c->SlabObjects;
    }

    /// <summary>Puts an owned slab with free objects on the thread's partial stack (put_cpu_partial). Inside the context.</summary>
    private static void AddPartial(SlabCpu* c, PageFrame* slab)
    {
        slab->Next = c->Partial;
        c->Partial = slab;
        c->NrPartial++;
    }

    /// <summary>Takes the newest slab off the thread's partial stack (which has one). Inside the context.</summary>
    private static PageFrame* PopPartial(SlabCpu* c)
    {
        PageFrame* slab = c->Partial;
        c->Partial = slab->Next;
        slab->Next = null;
        c->NrPartial--;
        return slab;
    }

    /// <summary>
    /// Marks an owned slab exhausted, linked on the thread's full chain (once: a slab that left it and comes back is
    /// still linked), where a free of one of its objects by this thread finds it without an atomic. Inside the context.
    /// </summary>
    private static void AddFull(SlabCpu* c, PageFrame* slab)
    {
        ulong flags = slab->FlagsAndZone;
        if ((flags & SlabPage.OnFullChain) == 0)
        {
            *FullLinkOf(c->Cache, slab) = c->Full;
            c->Full = slab;
            c->NrFull++;
        }
        slab->FlagsAndZone = flags | SlabPage.ThreadListBits;
    }

    /// <summary>
    /// Walks the thread's full chain: slabs that other threads freed objects into go to its partial stack, slabs that
    /// left the chain already are unlinked. The hint that said there were some is cleared first (a free that comes
    /// after sets it again). Inside the context.
    /// </summary>
    private void CollectRemotelyFreedFull(SlabThreadContext* ctx, SlabCpu* c)
    {
        Volatile.Write(ref _d->RemoteHints[ctx->Id], 0);
        Interlocked.MemoryBarrier();
        PageFrame** link = &c->Full;
        while (*link != null)
        {
            PageFrame* slab = *link;
            ulong flags = slab->FlagsAndZone;
            bool leaves = (flags & SlabPage.Exhausted) == 0 || SlabPage.Any(SlabPage.Remote(LocalOf(slab), _d), _d->Words);
            PageFrame** next = FullLinkOf(_d, slab);
            if (!leaves)
            {
                link = next;
                continue;
            }
            *link = *next;
            *next = null;
            c->NrFull--;
            slab->FlagsAndZone = flags & ~SlabPage.ThreadListBits;
            if ((flags & SlabPage.Exhausted) != 0) AddPartial(c, slab);
        }
    }

    /// <summary>The thread freed into an exhausted slab of its own: onto its partial stack (it stays linked on the full chain). Inside the context.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void FreedIntoOwnedSlab(SlabCpu* c, PageFrame* slab)
    {
        slab->FlagsAndZone &= ~SlabPage.Exhausted;
        AddPartial(c, slab);
    }

    /// <summary>Frees an object after the fast path declined: checks everything and reports misuse, then frees.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void FreeSlow(void* obj)
    {
        if (obj == null) return;
        if (_owner.Kfence is { } kfence && kfence.Contains(obj))
        {
            ObjectDisposedException.ThrowIf(_destroyed, this);
            if (kfence.CacheOf(obj) is var owner and not 0 && owner != (nint)_d)
                throw _pages.ReportMisuse(new MemoryCorruptionException($"kmem_cache_free({Name}): 0x{(nuint)obj:x} is a KFENCE object of cache {FromData((KmemCacheData*)owner).Name}.", (nuint)obj));
            kfence.Free(obj, "kmem_cache_free", _owner.CallSites.Name(_owner.CallSites.Capture()), _initOnFree);
            Interlocked.Increment(ref _d->FreeSlowPath);
            return;
        }
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
    /// else into the slab's remote bitmap. Inside the context.
    /// </summary>
    internal void FreeChecked(SlabThreadContext* ctx, PageFrame* slab, void* obj)
    {
        int index = ObjectIndex(slab, obj);
        if (index < 0) ThrowInteriorPointer(slab, obj);
        if (_d->FastPath == 0)
        {
            if (_kasan != null && KasanQuarantine(slab, obj)) return;
            FreeDebug(slab, obj, index);
            Interlocked.Increment(ref _d->FreeSlowPath);
            return;
        }
        ulong* local = LocalOf(slab) + (index >> 6);
        ulong mask = 1UL << index;
        if (((Volatile.Read(ref *local) | Volatile.Read(ref local[_d->RemoteDelta])) & mask) != 0)
            ThrowDoubleFree(slab, obj, "it is already free");
        InitOnFree(obj);
        if (_d->Key != 0 && _d->SerializedFree == 0)
        {
            SlabCpu* c = EntryOf(ctx);
            c->FreeSlowPath++;
            if (FreeOwned(ctx, c, slab, local, mask)) return;
            c->RemoteFrees++;
        }
        else
        {
            Interlocked.Increment(ref _d->FreeSlowPath);
        }
        FreeRemote(slab, obj, local, mask);
    }

    /// <summary>
    /// Frees to the calling thread when it owns the slab (its current slab, or one on its partial or full list) or owned
    /// it last and the slab floats (it takes it back with one compare-exchange onto its partial list). False when
    /// another thread owns it, another thread floated it, or it is on a node list. Inside the context.
    /// </summary>
    private bool FreeOwned(SlabThreadContext* ctx, SlabCpu* c, PageFrame* slab, ulong* local, ulong mask)
    {
        long state = SlabPage.ReadState(slab);
        if (SlabPage.IsFloating(state) && SlabPage.Owner(state) == ctx->Id)
        {
            if (Interlocked.CompareExchange(ref SlabPage.State(slab), SlabPage.Owned(ctx->Id), state) != state) return false;
            c->Claims++;
            *local |= mask;
            AddPartial(c, slab);
            return true;
        }
        if (SlabPage.OwnerWord(state) != ctx->Id) return false;
        *local |= mask;
        if ((slab->FlagsAndZone & SlabPage.Exhausted) != 0) FreedIntoOwnedSlab(c, slab);
        return true;
    }

    /// <summary>
    /// Frees into the slab's remote bitmap with one atomic OR (the owner, or whoever next takes the slab from its node,
    /// takes the bits in): of two threads freeing one object that way, exactly one finds the bit clear. A floating slab
    /// goes to its node's partial list first, so a thread that frees what others allocated never collects their slabs.
    /// A free that empties a slab on a node list may give the slab back to the page allocator.
    /// </summary>
    private void FreeRemote(PageFrame* slab, void* obj, ulong* local, ulong mask)
    {
        if (SlabPage.IsFloating(SlabPage.ReadState(slab))) RescueFloating(slab);
        ulong* remote = local + _d->RemoteDelta;
        ulong old = Interlocked.Or(ref *remote, mask);
        if ((old & mask) != 0) ThrowDoubleFree(slab, obj, "another thread freed it at the same time");
        long state = SlabPage.ReadState(slab);
        if (SlabPage.IsFloating(state))
        {
            // It floated in the meantime (a drain took it from its owner): it must not keep a free object unseen.
            RescueFloating(slab);
        }
        else if (SlabPage.OnNode(state))
        {
            if (IsEmptyOnNode(slab)) DiscardIfEmptyOnNode(slab);
        }
        else if (old == 0)
        {
            NoteRemoteFree(SlabPage.Owner(state));
        }
    }

    /// <summary>
    /// Tells the slab's owner that another thread freed into one of its slabs (the first bit of a remote word): the slab
    /// may be on its full list, which the owner looks through only when told. A plain store of a byte only the owner
    /// clears; a thread that took over a retired id finds a hint it can ignore.
    /// </summary>
    private void NoteRemoteFree(int owner)
    {
        if ((uint)owner < (uint)Volatile.Read(ref _d->HintCapacity)) Volatile.Write(ref _d->RemoteHints[owner], 1);
    }

    /// <summary>
    /// Flushes a thread's entry (flush_slab and unfreeze_partials): the current slab and every partial and full slab go
    /// to their nodes. Called by a drainer that holds the thread's context, or when the context retires.
    /// </summary>
    internal static void FlushEntry(SlabCpu* c)
    {
        if (c->Slab == null && c->Partial == null && c->Full == null && c->Count == 0) return;
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
        c->Count = 0; // its objects are free in their bitmaps already
        // The full chain first: slabs on it that are also on the partial stack are only unlinked here.
        while (c->Full != null)
        {
            PageFrame* slab = c->Full;
            PageFrame** next = FullLinkOf(_d, slab);
            c->Full = *next;
            *next = null;
            ulong flags = slab->FlagsAndZone;
            slab->FlagsAndZone = flags & ~SlabPage.ThreadListBits;
            if ((flags & SlabPage.Exhausted) != 0) Unfreeze(slab);
        }
        c->NrFull = 0;
        PageFrame* current = c->Slab;
        if (current != null)
        {
            c->Slab = null;
            c->Word = null;
            Unfreeze(current);
        }
        while (c->Partial != null) Unfreeze(PopPartial(c));
        c->Flushes++;
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
            throw _pages.ReportMisuse(new MemoryCorruptionException($"kmem_cache_free({Name}): 0x{(nuint)obj:x} is not in the arena.", (nuint)obj));
        if ((slab->FlagsAndZone & (uint)PageFlags.Slab) == 0)
            throw _pages.ReportMisuse(new MemoryCorruptionException(
                $"kmem_cache_free({Name}): 0x{(nuint)obj:x} is not a slab object (page pfn 0x{slab->Pfn:x}: {slab->Describe()}).", (nuint)obj));
        var other = (KmemCacheData*)slab->Private;
        string otherName = other->Handle != 0 && GCHandle.FromIntPtr(other->Handle).Target is KmemCache k ? k.Name : "?";
        throw _pages.ReportMisuse(new MemoryCorruptionException(
            $"kmem_cache_free({Name}): wrong cache: object 0x{(nuint)obj:x} belongs to cache {otherName} (slab pfn 0x{slab->Pfn:x}).", (nuint)obj));
    }

    private void ThrowInteriorPointer(PageFrame* slab, void* obj)
        => throw _pages.ReportMisuse(KasanReportFree("invalid-free", obj, new MemoryCorruptionException(
            $"kmem_cache_free({Name}): 0x{(nuint)obj:x} is not the start of an object (interior pointer; slab pfn 0x{slab->Pfn:x} at 0x{(nuint)SlabBase(slab):x}, object size {_d->Size}).",
            (nuint)obj)));

    private void ThrowDoubleFree(PageFrame* slab, void* obj, string why)
        => throw _pages.ReportMisuse(KasanReportFree("double-free", obj, new MemoryCorruptionException(
            $"kmem_cache_free({Name}): double free of object 0x{(nuint)obj:x}: {why} (slab pfn 0x{slab->Pfn:x}).", (nuint)obj)));
}
