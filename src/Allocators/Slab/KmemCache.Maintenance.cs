using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    /// <summary>
    /// Walks every slab (validate_slab_cache): first every thread's slabs of this cache go back to their nodes (a
    /// drain), then each slab on a node list has its bitmaps and counts checked and, for debug caches, every object's
    /// red zones and poison. Every problem is
    /// reported (and counted) and repaired like the kernel does, so a second call finds nothing.
    /// </summary>
    /// <returns>The problems found by this call.</returns>
    public IReadOnlyList<SlabReport> Validate()
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        if (_d->FastPath != 0) SlabCpus.DrainIndex(_d->CpuIndex);
        int before;
        lock (_reports) before = _reports.Count;
        var free = new bool[_d->Objects];
        for (int i = 0; i < _d->NodeCount; i++)
        {
            KmemCacheNode* n = _d->Nodes + i;
            NativeSpinLock.Acquire(&n->ListLock);
            try
            {
                var slabs = new List<nint>();
                for (PageFrame* s = n->Partial; s != null; s = s->Next) slabs.Add((nint)s);
                for (PageFrame* s = n->Full; s != null; s = s->Next) slabs.Add((nint)s);
                foreach (nint s in slabs) ValidateSlab(n, (PageFrame*)s, free);
            }
            finally
            {
                NativeSpinLock.Release(&n->ListLock);
            }
        }
        lock (_reports) return _reports.Skip(before).ToArray();
    }

    private void ValidateSlab(KmemCacheNode* n, PageFrame* slab, bool[] free)
    {
        if (_d->FastPath != 0) CollectRemoteLocked(n, slab);
        ulong* local = LocalOf(slab);
        // Bits past the last object are never set: a set one would hand out memory past the slab's objects.
        if ((local[_d->Words - 1] & ~_d->LastWordMask) != 0)
        {
            var text = new StringBuilder();
            AppendHeader(text, "Bitmap corrupt");
            text.Append(CultureInfo.InvariantCulture, $"Free bits past the last of {_d->Objects} objects: 0x{local[_d->Words - 1] & ~_d->LastWordMask:x}\n");
            text.Append(CultureInfo.InvariantCulture, $"FIX {Name}: Bits cleared\n");
            Record(new SlabReport(Name, "Bitmap corrupt", (nuint)SlabBase(slab), text.ToString()));
            local[_d->Words - 1] &= _d->LastWordMask;
        }
        int count = 0;
        for (int i = 0; i < _d->Objects; i++)
        {
            free[i] = (local[i >> 6] & (1UL << i)) != 0;
            if (free[i]) count++;
        }
        int recorded = SlabPage.FreeCount(slab);
        if (recorded != count)
        {
            var text = new StringBuilder();
            AppendHeader(text, "Wrong object count");
            text.Append(CultureInfo.InvariantCulture, $"Wrong object count. Counter is {_d->Objects - recorded} but counted were {_d->Objects - count}\n");
            text.Append(CultureInfo.InvariantCulture, $"FIX {Name}: Object count adjusted\n");
            Record(new SlabReport(Name, "Wrong object count", (nuint)SlabBase(slab), text.ToString()));
            n->FreeObjects += count - recorded;
            SlabPage.SetFreeCount(slab, count);
        }
        bool onFull = _d->FastPath == 0 && recorded == 0;
        if (count == 0 && !onFull)
        {
            UnlinkPartial(n, slab);
            if (_d->FastPath == 0)
            {
                SlabPage.Push(&n->Full, slab);
                n->NrFull++;
            }
            else
            {
                Volatile.Write(ref SlabPage.State(slab), SlabPage.Floating(0));
            }
        }
        else if (count > 0 && onFull)
        {
            SlabPage.Remove(&n->Full, slab);
            n->NrFull--;
            SlabPage.Push(&n->Partial, slab);
            n->NrPartial++;
            n->FreeObjects += count;
        }

        if ((_d->Flags & (int)(SlabFlags.RedZone | SlabFlags.Poison)) == 0) return;
        for (int i = 0; i < _d->Objects; i++) CheckObject(slab, ObjectAt(slab, i), active: !free[i] && !KasanQuarantined(ObjectAt(slab, i)));
    }

    /// <summary>
    /// Gives back everything cached (kmem_cache_shrink): every thread's slabs of this cache go back to their nodes, and
    /// every empty slab goes back to the page allocator. Returns the pages freed.
    /// </summary>
    public long Shrink()
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        _kasan?.Quarantine.Flush((nint)_d);
        if (_d->FastPath != 0) SlabCpus.DrainIndex(_d->CpuIndex);
        return DiscardEmptySlabs();
    }

    /// <summary>
    /// Objects handed out and not freed, counting every object of a slab a thread owns as in use (as SLUB counts a CPU
    /// slab's): exact after <see cref="Shrink"/>.
    /// </summary>
    public long ActiveObjects
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _d->NodeCount; i++)
            {
                KmemCacheNode* n = _d->Nodes + i;
                NativeSpinLock.Acquire(&n->ListLock);
                sum += n->TotalObjects - n->FreeObjects;
                if (_d->FastPath != 0)
                {
                    for (PageFrame* s = n->Partial; s != null; s = s->Next) sum -= SlabPage.Count(SlabPage.Remote(LocalOf(s), _d), _d->Words);
                }
                NativeSpinLock.Release(&n->ListLock);
            }
            return sum;
        }
    }

    /// <summary>The cache's counters (/sys/kernel/slab/&lt;name&gt;/ statistics).</summary>
    public KmemCacheStats Stats
    {
        get
        {
            long allocFast = Interlocked.Read(ref _d->RetiredAllocFastPath), freeFast = Interlocked.Read(ref _d->RetiredFreeFastPath);
            long refill = Interlocked.Read(ref _d->RetiredRefills), flush = Interlocked.Read(ref _d->RetiredFlushes);
            long remote = Interlocked.Read(ref _d->RetiredRemoteFrees), claims = Interlocked.Read(ref _d->RetiredClaims);
            long allocSlow = 0, freeSlow = 0;
            long key = _d->LiveKey;
            if (_d->FastPath != 0 && !_destroyed)
            {
                SlabCpus.ForEachEntry(_d->CpuIndex, p =>
                {
                    var c = (SlabCpu*)p;
                    if (c->Key != key) return;
                    allocFast += c->AllocFastPath;
                    freeFast += c->FreeFastPath;
                    allocSlow += c->AllocSlowPath;
                    freeSlow += c->FreeSlowPath;
                    refill += c->Refills;
                    flush += c->Flushes;
                    remote += c->RemoteFrees;
                    claims += c->Claims;
                });
            }
            allocSlow += Interlocked.Read(ref _d->AllocSlowPath);
            freeSlow += Interlocked.Read(ref _d->FreeSlowPath);
            long total = 0, slabs = 0, partial = 0;
            for (int i = 0; i < _d->NodeCount; i++)
            {
                total += Volatile.Read(ref _d->Nodes[i].TotalObjects);
                slabs += Volatile.Read(ref _d->Nodes[i].NrSlabs);
                partial += Volatile.Read(ref _d->Nodes[i].NrPartial);
            }
            return new KmemCacheStats(allocFast, allocSlow, freeFast, freeSlow,
                refill, flush, remote, claims, Interlocked.Read(ref _d->SlabsAllocated), Interlocked.Read(ref _d->SlabsFreed),
                Interlocked.Read(ref _d->AllocFailures), CorruptionsFound, ActiveObjects, total, slabs, partial);
        }
    }

    /// <summary>This cache's /proc/slabinfo line (SLUB: tunables 0 0 0, sharedavail 0).</summary>
    public string SlabInfoLine()
    {
        var s = Stats;
        return SlabInfoFormat.Line(new SlabInfoRow(Name, s.ActiveObjects, s.TotalObjects, _d->Size, _d->Objects, 1 << _d->Order, s.Slabs));
    }

    /// <summary>
    /// Checks the cache's books against its slabs (debug builds; the tests call it after their runs): every node's
    /// counters against its lists, and every slab of the arena against where it is. Only while nothing else runs.
    /// </summary>
    internal void CheckConsistency()
    {
        long slabsSeen = 0;
        ForEachSlab(p =>
        {
            var slab = (PageFrame*)p;
            long state = SlabPage.ReadState(slab);
            ulong* local = LocalOf(slab);
            int free = SlabPage.Count(local, _d->Words) + SlabPage.Count(SlabPage.Remote(local, _d), _d->Words);
            if (free > _d->Objects || (local[_d->Words - 1] & ~_d->LastWordMask) != 0)
                throw new InvalidOperationException($"{Name}: slab pfn 0x{slab->Pfn:x} has {free} free objects of {_d->Objects}");
            if (SlabPage.IsFloating(state) && free != 0)
                throw new InvalidOperationException($"{Name}: floating slab pfn 0x{slab->Pfn:x} has {free} free objects");
            slabsSeen++;
        });
        long nodeSlabs = 0;
        for (int i = 0; i < _d->NodeCount; i++)
        {
            KmemCacheNode* n = _d->Nodes + i;
            NativeSpinLock.Acquire(&n->ListLock);
            try
            {
                long partial = 0, full = 0, freeObjects = 0;
                for (PageFrame* s = n->Partial; s != null; s = s->Next)
                {
                    partial++;
                    freeObjects += SlabPage.FreeCount(s);
                    if (SlabPage.FreeCount(s) != SlabPage.Count(LocalOf(s), _d->Words))
                        throw new InvalidOperationException($"{Name}: partial slab pfn 0x{s->Pfn:x} counts {SlabPage.FreeCount(s)} free objects, its bitmap has {SlabPage.Count(LocalOf(s), _d->Words)}");
                    if (!SlabPage.OnNode(SlabPage.ReadState(s))) throw new InvalidOperationException($"{Name}: partial slab pfn 0x{s->Pfn:x} is not marked on-node");
                }
                for (PageFrame* s = n->Full; s != null; s = s->Next) full++;
                if (partial != n->NrPartial || full != n->NrFull || freeObjects != n->FreeObjects || n->TotalObjects != n->NrSlabs * _d->Objects)
                    throw new InvalidOperationException(
                        $"{Name}: node {i}: partial {partial} vs {n->NrPartial}, full {full} vs {n->NrFull}, free {freeObjects} vs {n->FreeObjects}, total {n->TotalObjects} vs {n->NrSlabs} x {_d->Objects}");
                nodeSlabs += n->NrSlabs;
            }
            finally
            {
                NativeSpinLock.Release(&n->ListLock);
            }
        }
        if (nodeSlabs != slabsSeen) throw new InvalidOperationException($"{Name}: the nodes count {nodeSlabs} slabs, the arena holds {slabsSeen}");
    }

    /// <summary>
    /// Destroys the cache (kmem_cache_destroy). When objects are still live, nothing is destroyed: the live objects are
    /// reported ("Objects remaining ... on __kmem_cache_shutdown()") and an <see cref="InvalidOperationException"/> carries the report.
    /// </summary>
    public void Destroy()
    {
        if (_destroyed) return;
        Shrink();
        long live = ActiveObjects;
        if (live > 0)
        {
            var text = new StringBuilder();
            AppendHeader(text, "Objects remaining on __kmem_cache_shutdown()");
            text.Append(CultureInfo.InvariantCulture, $"{live} object(s) still allocated in {Name}\n");
            int listed = 0;
            var free = new bool[_d->Objects];
            ForEachSlab(p =>
            {
                var s = (PageFrame*)p;
                if (listed >= 16) return;
                for (int o = 0; o < _d->Objects; o++) free[o] = IsFree(s, o);
                for (int o = 0; o < _d->Objects && listed < 16; o++)
                {
                    if (free[o]) continue;
                    void* obj = ObjectAt(s, o);
                    string? site = AllocationSite(obj);
                    text.Append(CultureInfo.InvariantCulture,
                        $"Object 0x{(nuint)obj:x} @offset={(nuint)obj - (nuint)SlabBase(s)}{(site is null ? "" : " allocated in " + site)}\n");
                    listed++;
                }
            });
            var report = new SlabReport(Name, "Objects remaining on __kmem_cache_shutdown()", 0, text.ToString());
            Record(report);
            throw new InvalidOperationException($"kmem_cache_destroy {Name}: Slab cache still has objects\n{report.Text}");
        }
        Close();
        DiscardEmptySlabs();
        ReleaseRcuHandler();
        _owner.Remove(this);
        NativeMemory.AlignedFree(_d->Nodes);
        _d->Nodes = null;
        _d->NodeCount = 0;
        // The small native record itself stays: this object's properties (and a stale fast path) still read it.
    }

    /// <summary>
    /// Closes the cache to every thread: the fast paths stop serving it (its key goes to 0), then every thread's entry
    /// for it is flushed and made fresh, with in-flight operations waited for, and its index is given back.
    /// </summary>
    private void Close()
    {
        Shut();
        if (_d->FastPath != 0) SlabCpus.RetireIndices([_d->CpuIndex], flush: true);
        ReleaseIndex();
    }

    /// <summary>Sets the key the fast paths compare: live unless destroyed, a debug cache, or fault injection is on.</summary>
    internal void Rekey()
    {
        if (_destroyed || _d->FastPath == 0) return;
        bool off = _owner.FailslabActive;
        Volatile.Write(ref _d->Key, off ? 0 : _d->LiveKey);
        // Every thread's objects and slabs of this cache go back to the nodes, so no fast path serves it from here on
        // (every thread is held off, even one that looks empty: it may be filling its entry right now).
        if (off) SlabCpus.RetireIndices([_d->CpuIndex], flush: true);
    }

    /// <summary>Stops every new operation on the cache: the slow paths throw, the fast paths decline.</summary>
    internal void Shut()
    {
        _destroyed = true;
        Volatile.Write(ref _d->Key, 0);
    }

    /// <summary>Gives back the cache's index (once every thread's entry for it is fresh) and its handle.</summary>
    internal void ReleaseIndex()
    {
        if (_ownsIndex) SlabCpus.FreeIndices(_d->CpuIndex, 1);
        if (_handle.IsAllocated)
        {
            _d->Handle = 0;
            _handle.Free();
        }
    }

    /// <summary>This cache's index in the thread contexts.</summary>
    internal int CpuIndex => _d->CpuIndex;

    /// <summary>Same as <see cref="Destroy"/>.</summary>
    public void Dispose() => Destroy();
}
