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
    /// Walks every slab (validate_slab_cache): follows each free list without ever following a corrupted pointer,
    /// checks counts and, for debug caches, the red zones and poison of every object. Every problem is reported
    /// (and counted) and repaired like the kernel does, so a second call finds nothing.
    /// </summary>
    /// <returns>The problems found by this call.</returns>
    public IReadOnlyList<SlabReport> Validate()
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
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
        Array.Clear(free);
        int count = 0;
        void* prev = null;
        void* p = SlabPage.Freelist(slab);
        while (p != null)
        {
            int index = ObjectIndex(slab, p);
            if (index < 0 || free[index])
            {
                if (prev == null)
                {
                    RecordFreelistCorruption(slab, p, p);
                    SlabPage.SetFreelist(slab, null);
                }
                else
                {
                    RecordFreelistCorruption(slab, prev, p);
                    SetFreePointer(_d, prev, null);
                }
                break;
            }
            free[index] = true;
            count++;
            prev = p;
            p = GetFreePointer(_d, p);
        }

        int expected = _d->Objects - count;
        int recorded = SlabPage.InUse(slab);
        if (recorded != expected)
        {
            var text = new StringBuilder();
            AppendHeader(text, "Wrong object count");
            text.Append(CultureInfo.InvariantCulture, $"Wrong object count. Counter is {recorded} but counted were {expected}\n");
            text.Append(CultureInfo.InvariantCulture, $"FIX {Name}: Object count adjusted\n");
            Record(new SlabReport(Name, "Wrong object count", (nuint)SlabBase(slab), text.ToString()));
            n->InUseObjects += expected - recorded;
            SlabPage.SetInUse(slab, expected);
        }
        int list = SlabPage.List(slab);
        if (count == 0 && list == SlabPage.ListPartial) MoveToFull(n, slab);
        else if (count > 0 && list == SlabPage.ListFull) MoveToPartial(n, slab);

        if ((_d->Flags & (int)(SlabFlags.RedZone | SlabFlags.Poison)) == 0) return;
        for (int i = 0; i < _d->Objects; i++) CheckObject(slab, ObjectAt(slab, i), active: !free[i]);
    }

    /// <summary>
    /// Gives back everything cached (kmem_cache_shrink): every thread's magazines and the depot go back to the slabs,
    /// and every empty slab goes back to the page allocator. Returns the pages freed.
    /// </summary>
    public long Shrink()
    {
        ObjectDisposedException.ThrowIf(_destroyed, this);
        _registry?.DrainAll();
        FlushDepot();
        return DiscardEmptySlabs();
    }

    /// <summary>Objects handed out and not freed (magazines included until <see cref="Shrink"/>).</summary>
    public long ActiveObjects
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _d->NodeCount; i++) sum += Volatile.Read(ref _d->Nodes[i].InUseObjects);
            return sum;
        }
    }

    /// <summary>The cache's counters (/sys/kernel/slab/&lt;name&gt;/ statistics).</summary>
    public KmemCacheStats Stats
    {
        get
        {
            long allocFast, freeFast, refill, flush, allocSlow, freeSlow;
            lock (_retired)
            {
                allocFast = _retired[0]; freeFast = _retired[1]; refill = _retired[2]; flush = _retired[3];
                allocSlow = _retired[4]; freeSlow = _retired[5];
            }
            _registry?.ForEach(p =>
            {
                var mc = (MagazineCache*)p;
                allocFast += mc->AllocFastPath;
                freeFast += mc->FreeFastPath;
                refill += mc->Refills;
                flush += mc->Flushes;
                allocSlow += mc->AllocSlowPath;
                freeSlow += mc->FreeSlowPath;
            });
            allocSlow += Interlocked.Read(ref _d->AllocSlowPath);
            freeSlow += Interlocked.Read(ref _d->FreeSlowPath);
            long total = 0, slabs = 0, partial = 0;
            for (int i = 0; i < _d->NodeCount; i++)
            {
                total += _d->Nodes[i].TotalObjects;
                slabs += _d->Nodes[i].NrSlabs;
                partial += _d->Nodes[i].NrPartial;
            }
            return new KmemCacheStats(allocFast, allocSlow, freeFast, freeSlow,
                refill, flush, _d->DepotExchanges, Interlocked.Read(ref _d->SlabsAllocated), Interlocked.Read(ref _d->SlabsFreed),
                Interlocked.Read(ref _d->AllocFailures), CorruptionsFound, ActiveObjects, total, slabs, partial);
        }
    }

    /// <summary>This cache's /proc/slabinfo line (SLUB: tunables 0 0 0, sharedavail 0).</summary>
    public string SlabInfoLine()
    {
        var s = Stats;
        int pagesPerSlab = 1 << _d->Order;
        return string.Create(CultureInfo.InvariantCulture,
            $"{Name,-17} {s.ActiveObjects,6} {s.TotalObjects,6} {_d->Size,6} {_d->Objects,4} {pagesPerSlab,4} : tunables {0,4} {0,4} {0,4} : slabdata {s.Slabs,6} {s.Slabs,6} {0,6}");
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
            for (int i = 0; i < _d->NodeCount && listed < 16; i++)
            {
                KmemCacheNode* n = _d->Nodes + i;
                NativeSpinLock.Acquire(&n->ListLock);
                var free = new bool[_d->Objects];
                for (int list = 0; list < 2; list++)
                {
                    for (PageFrame* s = list == 0 ? n->Partial : n->Full; s != null && listed < 16; s = s->Next)
                    {
                        Array.Clear(free);
                        for (void* p = SlabPage.Freelist(s); p != null;)
                        {
                            int idx = ObjectIndex(s, p);
                            if (idx < 0 || free[idx]) break;
                            free[idx] = true;
                            p = GetFreePointer(_d, p);
                        }
                        for (int o = 0; o < _d->Objects && listed < 16; o++)
                        {
                            if (free[o]) continue;
                            void* obj = ObjectAt(s, o);
                            string? site = AllocationSite(obj);
                            text.Append(CultureInfo.InvariantCulture,
                                $"Object 0x{(nuint)obj:x} @offset={(nuint)obj - (nuint)SlabBase(s)}{(site is null ? "" : " allocated in " + site)}\n");
                            listed++;
                        }
                    }
                }
                NativeSpinLock.Release(&n->ListLock);
            }
            var report = new SlabReport(Name, "Objects remaining on __kmem_cache_shutdown()", 0, text.ToString());
            Record(report);
            throw new InvalidOperationException($"kmem_cache_destroy {Name}: Slab cache still has objects\n{report.Text}");
        }
        _destroyed = true;
        _registry?.Dispose();
        FlushDepot();
        DiscardEmptySlabs();
        _owner.Remove(this);
        NativeMemory.AlignedFree(_d->Nodes);
        NativeMemory.Free(_d->OwnedFull);
        _d->OwnedFull = null;
        _d->OwnedCapacity = 0;
        _handle.Free();
        // The small native record itself stays: this object's properties still read it after destruction.
    }

    /// <summary>Same as <see cref="Destroy"/>.</summary>
    public void Dispose() => Destroy();
}
