using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    private readonly long[] _retired = new long[6];

    /// <summary>The cache line size passive false sharing is about.</summary>
    private const int SlotLine = 64;

    /// <summary>How far down a node's partial list a refill looks for a slab that is its own or nobody's.</summary>
    private const int OwnerScan = 8;

    // Owner ids of retired thread caches, and the highest id handed out (both under the registry lock).
    private readonly Stack<int> _freeOwnerIds = new();
    private int _ownerIds;

    private void* AllocSlow(Gfp gfp, int node, int requestedSize)
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        var mc = _d->FastPath != 0 && node < 0 ? (MagazineCache*)_registry!.GetOrCreateCurrent() : null;
        // Counted per thread where there are magazines: one shared counter bounced between every thread's slow paths.
        if (mc != null) mc->AllocSlowPath++;
        else Interlocked.Increment(ref _d->AllocSlowPath);
        if (_owner.FailslabActive && _owner.Failslab.ShouldFail(_d->ObjectSize, 0, gfp))
            return AllocFailed(gfp, injected: true);

        for (bool retry = false; ; retry = true)
        {
            void* obj = mc != null ? AllocThroughMagazines(mc, retry) : AllocFromSlabs(node, requestedSize);
            if (obj != null)
            {
                // A debug kmalloc cache red-zones the bytes after the requested size: zero only what was asked for.
                if ((gfp & Gfp.Zero) != 0)
                    NativeMemory.Clear(obj, (nuint)(_d->OrigSizeOffset >= 0 ? requestedSize : _d->ObjectSize));
                return obj;
            }
            int grown = mc != null ? GrowSlabInto(mc, gfp) : GrowSlab(gfp, node);
            if (grown < 0) return AllocFailed(gfp, injected: false);
            // The page allocator may have fallen back to another node: take the object from where the slab went,
            // or a node-bound request would grow slabs it can never use, forever.
            if (node >= 0) node = grown;
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

    /// <summary>
    /// Previous magazine, then the thread's stash, then the depot, then the slabs; null when the slabs are out of objects
    /// too. <paramref name="retry"/>: the same allocation again after a slab was grown (not another slow path to adapt to).
    /// </summary>
    private void* AllocThroughMagazines(MagazineCache* mc, bool retry)
    {
        ThreadCacheHeader* c = &mc->Header;
        if (!ThreadCacheHeader.TryEnter(c)) return AllocFromSlabs(-1, _d->ObjectSize);
        try
        {
            if (mc->Loaded->Count == 0)
            {
                if (mc->Previous->Count > 0) SwapMagazines(mc);
                else
                {
                    if (!retry)
                    {
                        mc->FeedsOthers = 0; // it allocates again: its own frees are for itself
                        Adapt(mc, +1);
                    }
                    if (mc->Stash != null) LoadFromStash(mc);
                    else if (!TakeFullFromDepot(mc))
                    {
                        RefillFromSlabs(mc->Loaded, mc->Target, -1, mc->OwnerId);
                        mc->ObjectsIn += mc->Loaded->Count;
                        mc->Refills++;
                    }
                }
            }
            Magazine* m = mc->Loaded;
            if (m->Count == 0) return null;
            return m->Objects[--m->Count];
        }
        finally
        {
            ThreadCacheHeader.Exit(c);
        }
    }

    private void* AllocFromSlabs(int node, int requestedSize)
    {
        int nodes = _d->NodeCount;
        int start = node < 0 ? _pages.CurrentNode : node;
        int tries = node < 0 ? nodes : 1;
        bool debug = (_d->Flags & (int)SlabFlags.Debug) != 0;
        int site = debug && _d->TrackOffset >= 0 ? _owner.CallSites.Capture() : 0;
        for (int i = 0; i < tries; i++)
        {
            KmemCacheNode* n = _d->Nodes + (start + i) % nodes;
            if (n->Partial == null) continue;
            NativeSpinLock.Acquire(&n->ListLock);
            PageFrame* slab = n->Partial;
            void* obj = slab != null ? TakeFromSlab(n, slab) : null;
            if (obj != null && debug) AllocDebug(slab, obj, requestedSize, site);
            NativeSpinLock.Release(&n->ListLock);
            if (obj != null) return obj;
        }
        return null;
    }

    private void SwapMagazines(MagazineCache* mc)
    {
        Magazine* loaded = mc->Loaded;
        Load(mc, mc->Previous);
        mc->Previous = loaded;
    }

    private Magazine* TakeEmptyMagazine()
    {
        NativeSpinLock.Acquire(&_d->DepotLock);
        Magazine* m = PopEmpty();
        NativeSpinLock.Release(&_d->DepotLock);
        if (m == null) m = NewMagazine();
        m->Next = null;
        return m;
    }

    /// <summary>This thread's spare empty magazine, else one from the depot, else a new one.</summary>
    private Magazine* TakeEmpty(MagazineCache* mc)
    {
        Magazine* empty = mc->Spares;
        if (empty == null) return TakeEmptyMagazine();
        mc->Spares = empty->Next;
        mc->NrSpares--;
        empty->Next = null;
        return empty;
    }

    /// <summary>
    /// Loads a full magazine from the depot (the empty previous one becomes a spare); false when the depot has none for
    /// this thread. Magazines parked for another thread are not taken: their objects lie next to objects that thread
    /// still uses, and this thread's writes would land in its cache lines (passive false sharing).
    /// </summary>
    private bool TakeFullFromDepot(MagazineCache* mc)
    {
        if (_d->NrFull == 0) return false;
        // The previous magazine is empty too (the caller found both so): it becomes a spare, or, when the thread has as
        // many as it keeps, goes to the depot in the same lock hold (each hold moves the depot's line between the cores
        // of a producer and a consumer).
        Magazine* empty = mc->Previous;
        bool keep = mc->NrSpares < _d->MaxStash;
        NativeSpinLock.Acquire(&_d->DepotLock);
        int owner = mc->OwnerId;
        Magazine** list = owner > 0 && owner < _d->OwnedCapacity && _d->OwnedFull[owner] != null
            ? &_d->OwnedFull[owner]
            : &_d->FullMagazines;
        Magazine* full = *list;
        if (full != null)
        {
            *list = full->Next;
            _d->NrFull--;
            _d->DepotExchanges++;
            if (!keep) PushEmpty(empty);
        }
        NativeSpinLock.Release(&_d->DepotLock);
        if (full == null) return false;
        full->Next = null;
        mc->ObjectsIn += full->Count;
        if (keep)
        {
            bool kept = TryKeepSpare(mc, empty);
            Debug.Assert(kept, "keep was decided by the same test");
        }
        mc->Previous = mc->Loaded;
        Load(mc, full);
        return true;
    }

    /// <summary>Parks a full magazine on its owner's depot list, or the shared one (depot lock held).</summary>
    private void PushFull(Magazine* full)
    {
        int owner = full->Owner;
        Magazine** list = owner > 0 && owner < _d->OwnedCapacity ? &_d->OwnedFull[owner] : &_d->FullMagazines;
        full->Next = *list;
        *list = full;
        _d->NrFull++;
    }

    /// <summary>Makes room for <paramref name="owner"/> in the depot's table of per-owner lists (registry lock held).</summary>
    private void EnsureOwnedList(int owner)
    {
        if (owner < _d->OwnedCapacity) return;
        int capacity = Math.Max(16, _d->OwnedCapacity * 2);
        while (capacity <= owner) capacity *= 2;
        var table = (Magazine**)NativeMemory.AllocZeroed((nuint)capacity, (nuint)sizeof(Magazine*));
        NativeSpinLock.Acquire(&_d->DepotLock);
        Magazine** old = _d->OwnedFull;
        for (int i = 0; i < _d->OwnedCapacity; i++) table[i] = old[i];
        _d->OwnedFull = table;
        _d->OwnedCapacity = capacity;
        NativeSpinLock.Release(&_d->DepotLock);
        NativeMemory.Free(old); // only read under the depot lock
    }

    /// <summary>A retired owner's parked magazines become anyone's: nobody uses the lines next to their objects any more.</summary>
    private void ReleaseOwnedList(int owner)
    {
        NativeSpinLock.Acquire(&_d->DepotLock);
        ShareOwnedList(owner);
        NativeSpinLock.Release(&_d->DepotLock);
    }

    /// <summary>Moves <paramref name="owner"/>'s parked magazines to the shared list (depot lock held).</summary>
    private void ShareOwnedList(int owner)
    {
        Magazine* m = _d->OwnedFull[owner];
        _d->OwnedFull[owner] = null;
        while (m != null)
        {
            Magazine* next = m->Next;
            m->Owner = 0;
            m->Next = _d->FullMagazines;
            _d->FullMagazines = m;
            m = next;
        }
    }

    private void FreeSlow(PageFrame* slab, void* obj)
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        if (ObjectIndex(slab, obj) < 0) ThrowInteriorPointer(slab, obj);
        // FreeSlowPath is counted only once the free is accepted: a rejected free changes nothing.
        if (_d->FastPath == 0)
        {
            FreeDebug(slab, obj);
            Interlocked.Increment(ref _d->FreeSlowPath);
            return;
        }
        if (SlabPage.Freelist(slab) == obj) ThrowDoubleFree(slab, obj, "it is the head of its slab's free list");

        ThreadCacheHeader* c = _registry!.GetOrCreateCurrent();
        var mc = (MagazineCache*)c;
        if (!ThreadCacheHeader.TryEnter(c))
        {
            Interlocked.Increment(ref _d->FreeSlowPath);
            FlushToSlabs(&obj, 1);
            return;
        }
        try
        {
            bool remote = SlabPage.IsRemote(slab, mc->OwnerId);
            Magazine* m = remote ? mc->Remote : mc->Loaded;
            if (m->Count > 0 && m->Objects[m->Count - 1] == obj) ThrowDoubleFree(slab, obj, "it was just freed (top of this thread's magazine)");
            mc->FreeSlowPath++;
            if (remote)
            {
                if (m->Count >= m->Limit) ParkRemoteInDepot(mc);
                m = mc->Remote;
                m->Objects[m->Count++] = obj;
                return;
            }
            if (m->Count >= m->Limit)
            {
                if (mc->Previous->Count == 0) SwapMagazines(mc);
                else MovePreviousOut(mc);
            }
            m = mc->Loaded;
            m->Objects[m->Count++] = obj;
        }
        finally
        {
            ThreadCacheHeader.Exit(c);
        }
    }

    /// <summary>
    /// Both loaded magazines are full: the previous one goes to this thread's stash while it is in a run of frees, else to
    /// the depot, else (depot full) back to the slabs; an empty one is loaded.
    /// </summary>
    private void MovePreviousOut(MagazineCache* mc)
    {
        Adapt(mc, -1);
        if (InRun(mc) && mc->NrStash < _d->MaxStash)
        {
            StashPrevious(mc);
        }
        else if (ParkFullInDepot(mc))
        {
            if (FeedsOtherThreads(mc))
            {
                mc->FeedsOthers = 1;
                SetFillLimit(mc);
            }
        }
        else
        {
            // Depot full: give the previous magazine's objects back to their slabs and reuse it.
            FlushToSlabs(mc->Previous->Objects, mc->Previous->Count);
            mc->ObjectsOut += mc->Previous->Count;
            mc->Previous->Count = 0;
            mc->Flushes++;
            SwapMagazines(mc);
        }
    }

    /// <summary>Loads this thread's newest stashed magazine; the empty loaded one becomes a spare (or goes to the depot).</summary>
    private void LoadFromStash(MagazineCache* mc)
    {
        Magazine* m = mc->Stash;
        mc->Stash = m->Next;
        mc->NrStash--;
        m->Next = null;
        KeepOrReturnEmpty(mc, mc->Loaded);
        Load(mc, m);
    }

    /// <summary>Stashes the (non-empty) previous magazine; the full loaded one becomes previous and an empty one is loaded.</summary>
    private void StashPrevious(MagazineCache* mc)
    {
        Magazine* previous = mc->Previous;
        previous->Next = mc->Stash;
        mc->Stash = previous;
        mc->NrStash++;
        mc->Previous = mc->Loaded;
        Load(mc, TakeEmpty(mc));
    }

    /// <summary>Keeps an empty magazine as this thread's spare, or gives it to the depot when the thread has enough.</summary>
    private void KeepOrReturnEmpty(MagazineCache* mc, Magazine* empty)
    {
        if (TryKeepSpare(mc, empty)) return;
        NativeSpinLock.Acquire(&_d->DepotLock);
        PushEmpty(empty);
        NativeSpinLock.Release(&_d->DepotLock);
    }

    /// <summary>Puts an empty magazine on the depot's list (depot lock held).</summary>
    private void PushEmpty(Magazine* empty)
    {
        empty->Next = _d->EmptyMagazines;
        _d->EmptyMagazines = empty;
        _d->NrEmpty++;
    }

    /// <summary>Takes an empty magazine off the depot's list, or null (depot lock held).</summary>
    private Magazine* PopEmpty()
    {
        Magazine* m = _d->EmptyMagazines;
        if (m != null)
        {
            _d->EmptyMagazines = m->Next;
            _d->NrEmpty--;
        }
        return m;
    }

    /// <summary>Keeps an empty magazine as this thread's spare; false when the thread has as many as its stash allows.</summary>
    private bool TryKeepSpare(MagazineCache* mc, Magazine* empty)
    {
        if (mc->NrSpares >= _d->MaxStash) return false;
        empty->Next = mc->Spares;
        mc->Spares = empty;
        mc->NrSpares++;
        return true;
    }

    /// <summary>Parks the full previous magazine in the depot and loads an empty one; false when the depot is at its limit.</summary>
    private bool ParkFullInDepot(MagazineCache* mc)
    {
        Magazine* empty = ExchangeFullForEmpty(mc, mc->Previous, mc->OwnerId);
        if (empty == null) return false;
        mc->Previous = mc->Loaded;
        Load(mc, empty);
        return true;
    }

    /// <summary>
    /// Hands a full remote magazine to the depot (where the next thread short of objects, usually the one that
    /// allocated them, takes it) and starts an empty one; gives the objects back to their slabs when the depot is full.
    /// </summary>
    private void ParkRemoteInDepot(MagazineCache* mc)
    {
        // For the thread that owns the slab of the first object (the others are usually that thread's too).
        Magazine* empty = ExchangeFullForEmpty(mc, mc->Remote, Math.Max(0, SlabOf(_memory, mc->Remote->Objects[0])->MapCount));
        if (empty != null)
        {
            empty->Limit = RemoteFillLimit(mc);
            mc->Remote = empty;
            return;
        }
        FlushToSlabs(mc->Remote->Objects, mc->Remote->Count);
        mc->ObjectsOut += mc->Remote->Count;
        mc->Remote->Count = 0;
        mc->Flushes++;
    }

    /// <summary>
    /// Puts <paramref name="full"/> in the depot and returns an empty magazine for it (this thread's spare first: its
    /// lines are in this core's cache already); null (nothing changed) when the depot is at its limit.
    /// </summary>
    private Magazine* ExchangeFullForEmpty(MagazineCache* mc, Magazine* full, int owner)
    {
        full->Owner = owner;
        // Without a spare of its own the thread takes an empty magazine in the same lock hold.
        bool needEmpty = mc->Spares == null;
        Magazine* empty = null;
        NativeSpinLock.Acquire(&_d->DepotLock);
        bool parked = _d->NrFull < _d->MaxFull;
        if (parked)
        {
            PushFull(full);
            _d->DepotExchanges++;
            if (needEmpty) empty = PopEmpty();
        }
        NativeSpinLock.Release(&_d->DepotLock);
        if (!parked) return null;
        mc->ObjectsOut += full->Count;
        if (empty == null) return needEmpty ? NewMagazine() : TakeEmpty(mc); // the depot had none either: no second hold
        empty->Next = null;
        return empty;
    }

    /// <summary>Returns every object parked in the depot to the slabs and frees the depot's magazines.</summary>
    private void FlushDepot()
    {
        NativeSpinLock.Acquire(&_d->DepotLock);
        for (int owner = 0; owner < _d->OwnedCapacity; owner++) ShareOwnedList(owner);
        Magazine* full = _d->FullMagazines;
        Magazine* empty = _d->EmptyMagazines;
        _d->FullMagazines = _d->EmptyMagazines = null;
        _d->NrFull = _d->NrEmpty = 0;
        NativeSpinLock.Release(&_d->DepotLock);
        while (full != null)
        {
            Magazine* next = full->Next;
            FlushToSlabs(full->Objects, full->Count);
            FreeMagazine(full);
            full = next;
        }
        while (empty != null)
        {
            Magazine* next = empty->Next;
            FreeMagazine(empty);
            empty = next;
        }
    }

    void IThreadCacheOwner.FlushCache(ThreadCacheHeader* cache)
    {
        var mc = (MagazineCache*)cache;
        FlushMagazine(mc->Loaded);
        FlushMagazine(mc->Previous);
        FlushMagazine(mc->Remote);
        FlushStash(mc);
        mc->Flushes++;
    }

    private void FlushMagazine(Magazine* m)
    {
        if (m == null || m->Count == 0) return;
        FlushToSlabs(m->Objects, m->Count);
        m->Count = 0;
    }

    void IThreadCacheOwner.InitCache(ThreadCacheHeader* cache)
    {
        // The owner id marks the slabs this thread refills from; 0 (nobody) and negative (shared) are never used.
        // Ids are small and reused: a thread that adopts an exited thread's cache keeps its id, and one that starts
        // after a cache was retired takes that id (and with it the slabs marked with it; the retired cache's parked
        // magazines became anyone's then).
        // Where every slot covers whole cache lines of its own no two objects share a line, so reusing another thread's
        // freed object cannot cause passive false sharing: such caches track no owner (0), and no free is remote.
        var mc = (MagazineCache*)cache;
        mc->OwnerId = _d->Size % SlotLine == 0 ? 0 : TakeOwnerId();
        // The fast paths rely on a registered block always having its magazines (until it is retired).
        mc->Loaded = TakeEmptyMagazine();
        mc->Previous = TakeEmptyMagazine();
        mc->Remote = TakeEmptyMagazine();
        mc->Target = MinTarget;
        SetFillLimit(mc);
    }

    bool IThreadCacheOwner.AdoptCache(ThreadCacheHeader* cache)
    {
        // The exited thread's magazines, its stash (at most what any thread keeps for its runs) and its owner id (with
        // the slabs it refilled from) carry on in the new thread; the magazines parked for it in the depot go to anyone.
        // (Flushing the stash cost larson 6 %; parking it in the depot, where nothing bounds it per thread, doubled
        // mstress's footprint in half the runs.) How the magazines were sized was about the old thread's use, and the
        // slow-path balance starts from what the magazines hold.
        var mc = (MagazineCache*)cache;
        if (mc->OwnerId > 0) ReleaseOwnedList(mc->OwnerId);
        mc->Target = MinTarget;
        mc->LastSlowPath = mc->DirectionChanges = mc->FeedsOthers = 0;
        long held = mc->Loaded->Count + mc->Previous->Count + mc->Remote->Count;
        for (Magazine* m = mc->Stash; m != null; m = m->Next) held += m->Count;
        mc->ObjectsIn = held;
        mc->ObjectsOut = 0;
        SetFillLimit(mc);
        return true;
    }

    /// <summary>Gives the objects of a thread's stashed magazines back to their slabs; the magazines become spares, or are freed beyond those.</summary>
    private void FlushStash(MagazineCache* mc)
    {
        while (mc->Stash != null)
        {
            Magazine* m = mc->Stash;
            mc->Stash = m->Next;
            mc->NrStash--;
            FlushMagazine(m);
            if (!TryKeepSpare(mc, m)) FreeMagazine(m);
        }
    }

    /// <summary>Makes <paramref name="m"/> the loaded magazine, taking frees up to <see cref="LoadedLimit"/>.</summary>
    private void Load(MagazineCache* mc, Magazine* m)
    {
        m->Limit = LoadedLimit(mc);
        mc->Loaded = m;
    }

    /// <summary>
    /// The fewest objects a thread keeps per magazine: 4 KiB of them (at least 8, at most the capacity). A thread that
    /// allocates and frees a class in no long runs holds three magazines of this size, not of the full capacity.
    /// </summary>
    internal int MinTarget => Math.Clamp(MinTargetBytes / _d->Size, 8, _d->MagazineCapacity);

    private const int MinTargetBytes = 4096;

    /// <summary>
    /// Sizes this thread's magazines by how it uses them, at every slow path that moves a whole magazine (jemalloc sizes
    /// its thread caches' refills the same way): two in a row in the same direction (a run of allocations, or of frees:
    /// a burst, a producer, a consumer, a tree built then freed) double <see cref="MagazineCache.Target"/> up to the
    /// capacity; a change of direction right after another (the level going up and down as in a steady mix) halves it
    /// down to <see cref="MinTarget"/>. A single change (the end of a burst) leaves it. Remote frees do not count: their
    /// magazine has a limit of its own (<see cref="RemoteFillLimit"/>).
    /// </summary>
    internal void Adapt(MagazineCache* mc, int direction)
    {
        if (mc->LastSlowPath == direction)
        {
            mc->Target = Math.Min(mc->Target * 2, _d->MagazineCapacity);
            mc->DirectionChanges = 0;
        }
        else if (++mc->DirectionChanges >= 2)
        {
            mc->Target = Math.Max(mc->Target / 2, MinTarget);
        }
        mc->LastSlowPath = direction;
        SetFillLimit(mc);
    }

    /// <summary>
    /// True while the thread's magazines are at full size (it is in runs of one direction): only then do full magazines
    /// go to its own stash for a run the other way. A thread in a steady mix parks them in the depot, where any thread
    /// can use them, instead of holding up to <see cref="KmemCacheData.MaxStash"/> of them for itself.
    /// </summary>
    private bool InRun(MagazineCache* mc) => mc->Target == _d->MagazineCapacity;

    /// <summary>Sets the loaded and the remote magazine's limits after the target or <see cref="MagazineCache.FeedsOthers"/> changed.</summary>
    private void SetFillLimit(MagazineCache* mc)
    {
        if (mc->Loaded != null) mc->Loaded->Limit = LoadedLimit(mc);
        if (mc->Remote != null) mc->Remote->Limit = RemoteFillLimit(mc);
    }

    /// <summary>How full the loaded magazine gets: the target, at most <see cref="ConsumerFillLimit"/> while this thread's frees feed other threads.</summary>
    private int LoadedLimit(MagazineCache* mc) => mc->FeedsOthers != 0 ? Math.Min(mc->Target, ConsumerFillLimit) : mc->Target;

    /// <summary>
    /// How full a remote magazine gets before it goes to the depot: whole magazines (the objects go back to one other
    /// thread in one exchange), or <see cref="ConsumerFillLimit"/> while this thread's frees feed other threads.
    /// </summary>
    private int RemoteFillLimit(MagazineCache* mc) => mc->FeedsOthers != 0 ? ConsumerFillLimit : _d->MagazineCapacity;

    /// <summary>
    /// How full a thread fills its magazines while they go to the depot for other threads (its stash is full and it
    /// frees mostly objects others allocated, see <see cref="FeedsOtherThreads"/>). Smaller magazines hand freed objects back to
    /// their allocating thread sooner: 1 producer and 1 consumer of 64-byte objects run 15 % faster with 32 objects a
    /// magazine than with 128, while a thread reusing its own frees wants whole magazines (fewer slow-path calls).
    /// </summary>
    private int ConsumerFillLimit => Math.Min(_d->MagazineCapacity, 32);

    /// <summary>
    /// True when the thread's slow paths have moved more than twice as many objects out of its magazines as they brought
    /// in: it frees more than it allocates, so most of what it frees was allocated elsewhere. (Counted on slow paths, so
    /// it holds whether or not the fast paths count themselves.) A thread freeing a big structure it built itself
    /// (binary-trees) is not one, however long its run of frees, and keeps whole magazines.
    /// </summary>
    private static bool FeedsOtherThreads(MagazineCache* mc) => mc->ObjectsOut > 2 * mc->ObjectsIn;

    /// <summary>An owner id no live thread cache of this cache holds, a retired one first (registry lock held).</summary>
    private int TakeOwnerId()
    {
        if (_freeOwnerIds.Count > 0) return _freeOwnerIds.Pop();
        EnsureOwnedList(++_ownerIds);
        return _ownerIds;
    }

    void IThreadCacheOwner.RetireCache(ThreadCacheHeader* cache)
    {
        var mc = (MagazineCache*)cache;
        if (mc->OwnerId > 0)
        {
            ReleaseOwnedList(mc->OwnerId);
            _freeOwnerIds.Push(mc->OwnerId);
        }
        lock (_retired)
        {
            _retired[0] += mc->AllocFastPath;
            _retired[1] += mc->FreeFastPath;
            _retired[2] += mc->Refills;
            _retired[3] += mc->Flushes;
            _retired[4] += mc->AllocSlowPath;
            _retired[5] += mc->FreeSlowPath;
        }
        if (mc->Loaded != null) FreeMagazine(mc->Loaded);
        if (mc->Previous != null) FreeMagazine(mc->Previous);
        if (mc->Remote != null) FreeMagazine(mc->Remote);
        mc->Loaded = mc->Previous = mc->Remote = null;
        FreeMagazineList(mc->Stash); // empty after FlushCache, which always runs first
        FreeMagazineList(mc->Spares);
        mc->Stash = mc->Spares = null;
        mc->NrStash = mc->NrSpares = 0;
    }

    private void FreeMagazineList(Magazine* m)
    {
        while (m != null)
        {
            Magazine* next = m->Next;
            FreeMagazine(m);
            m = next;
        }
    }

    private Magazine* NewMagazine()
    {
        Interlocked.Increment(ref _d->LiveMagazines);
        return Magazine.Create(_d->MagazineCapacity);
    }

    private void FreeMagazine(Magazine* m)
    {
        Interlocked.Decrement(ref _d->LiveMagazines);
        Magazine.Free(m);
    }

    /// <summary>
    /// Magazines in existence and magazines where they can be: three per thread cache plus its stash and spares, and
    /// the depot's full and empty ones (a leaked magazine makes the first larger). Read while nothing moves them.
    /// </summary>
    internal (long Live, long AccountedFor) MagazineCensus()
    {
        long accounted = 0, live = 0;
        _registry?.ForEach(p =>
        {
            var mc = (MagazineCache*)p;
            accounted += 3 + mc->NrStash + mc->NrSpares;
        }, () =>
        {
            NativeSpinLock.Acquire(&_d->DepotLock);
            accounted += _d->NrFull + _d->NrEmpty;
            live = Volatile.Read(ref _d->LiveMagazines);
            NativeSpinLock.Release(&_d->DepotLock);
        });
        return (live, accounted);
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
