using System.Runtime.CompilerServices;
using Allocators.Threading;

namespace Allocators.Mmu;

public abstract unsafe partial class VirtualAddressSpace
{
    /// <summary>Up to this many pages a range flush invalidates page by page; above, the whole TLB (tlb_single_page_flush_ceiling).</summary>
    public const int SinglePageFlushCeiling = 33;

    private long _flushAll;
    private long _flushRange;
    private long _flushPage;
    private long _shootdowns;
    private long _retiredHits;
    private long _retiredMisses;
    private long _retiredLocalFlushes;
    private readonly Lock _retiredLock = new(); // never taken together with the page-table lock

    // The thread's most recently used TLB (a CR3-like "current address space" per thread). The registry owns the
    // blocks (freed when the thread exits or the space is disposed); this one-entry cache only saves its lookup on
    // the hot path. _self is cleared by Dispose, so a stale cache entry never matches a disposed space.
    // One thread-static struct, so that the hot path pays for a single thread-local lookup.
    [ThreadStatic] private static TlbCursor t_cursor;
    private VirtualAddressSpace? _self;

    private struct TlbCursor
    {
        public VirtualAddressSpace? Owner;
        public nint Tlb;
    }

    /// <summary>The calling thread's TLB when it is the cached one; else null (hot path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ThreadTlb* FastTlb()
    {
        ref TlbCursor cursor = ref t_cursor;
        return ReferenceEquals(cursor.Owner, _self) ? (ThreadTlb*)cursor.Tlb : null;
    }

    /// <summary>The calling thread's TLB for this address space, created on first use.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected ThreadTlb* CurrentTlb()
    {
        var tlb = FastTlb();
        return tlb != null ? tlb : RegisterTlb();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ThreadTlb* RegisterTlb()
    {
        ThrowIfDisposed();
        var tlb = (ThreadTlb*)_tlbs.GetOrCreateCurrent();
        if (tlb->Initialized == 0)
        {
            tlb->Gen = Volatile.Read(ref _tlbGen);
            tlb->Initialized = 1;
            Interlocked.Increment(ref _tlbThreads);
        }
        // With KASAN on no access takes the TLB-hit paths (they would skip the shadow check): FastTlb stays null.
        if (_kasan != null) return tlb;
        ref TlbCursor cursor = ref t_cursor;
        cursor.Tlb = (nint)tlb;
        cursor.Owner = this;
        return tlb;
    }

    /// <summary>Forgets the calling thread's cached TLB if it is this space's (on disposal).</summary>
    private void ForgetCachedTlb()
    {
        _self = null;
        ref TlbCursor cursor = ref t_cursor;
        if (ReferenceEquals(cursor.Owner, this)) cursor = default;
    }

    /// <summary>Enters an access region: from here until <see cref="ExitAccess"/> no page reached through the TLB is freed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void EnterAccess(ThreadTlb* tlb) => Volatile.Write(ref tlb->Busy, 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ExitAccess(ThreadTlb* tlb) => Volatile.Write(ref tlb->Busy, 0);

    /// <summary>
    /// Inside an access region: the TLB (after catching up with the flush generation), then the page walk.
    /// Returns the host address of the byte, or null with the fault's error code.
    /// </summary>
    private byte* TranslateInRegion(ThreadTlb* tlb, ulong va, MemoryAccess access, bool user, out PageFaultErrorCode error)
    {
        long gen = Volatile.Read(ref _tlbGen);
        if (tlb->Gen != gen)
        {
            ThreadTlb.Clear(tlb);
            Volatile.Write(ref tlb->Gen, gen); // also acknowledges the flush to a waiting flusher
        }
        ulong need = access switch
        {
            MemoryAccess.Write => ThreadTlb.Valid | ThreadTlb.Writable,
            MemoryAccess.Execute => ThreadTlb.Valid | ThreadTlb.Executable,
            _ => ThreadTlb.Valid,
        };
        // User-mode permission is implied: this TLB only ever holds entries the access mode of the space may use.
        if (!user || _userMode)
        {
            TlbEntry* set = ThreadTlb.Set(tlb, va);
            if ((set->Key & (ThreadTlb.KeyMask | need)) == ((va & ThreadTlb.KeyMask) | need))
            {
                tlb->Hits++;
                error = 0;
                return set->Host + VirtualAddress.PageOffsetOf(va);
            }
            byte* other = ThreadTlb.LookupOtherWays(tlb, va, need);
            if (other != null)
            {
                tlb->Hits++;
                error = 0;
                return other + VirtualAddress.PageOffsetOf(va);
            }
        }
        tlb->Misses++;
        return Walk(va, access, user, tlb, fill: true, out error);
    }

    /// <summary>
    /// Puts a translation the caller has just written into its own thread's TLB <paramref name="tlb"/>, as the first
    /// access would: for a page only this thread uses (its kmap_local slot), so the access after the map is a hit. A
    /// TLB behind on flushes is left alone (its next access clears it).
    /// </summary>
    private protected void PrefillLocal(ThreadTlb* tlb, ulong va, byte* host, bool writable)
    {
        if (tlb->Gen != Volatile.Read(ref _tlbGen)) return;
        ThreadTlb.Fill(tlb, va, ThreadTlb.Valid | (writable ? ThreadTlb.Writable : 0), host);
    }

    /// <summary>Invalidates the translation of one page on every thread (flush_tlb_page).</summary>
    public void FlushTlbPage(ulong va)
    {
        ThrowIfDisposed();
        Flush(va, va + VirtualAddress.PageSize, waitForAccesses: true);
    }

    /// <summary>Invalidates the translations of [<paramref name="start"/>, <paramref name="end"/>) on every thread (flush_tlb_range).</summary>
    public void FlushTlbRange(ulong start, ulong end)
    {
        ThrowIfDisposed();
        if (end < start) throw new ArgumentException($"Range end 0x{end:x} is below its start 0x{start:x}.", nameof(end));
        Flush(start, end, waitForAccesses: true);
    }

    /// <summary>Invalidates every translation on every thread (flush_tlb_mm).</summary>
    public void FlushTlbAll()
    {
        ThrowIfDisposed();
        Flush(0, ulong.MaxValue, waitForAccesses: true);
    }

    /// <summary>
    /// Bumps the generation (every other thread drops its whole TLB at its next access), flushes the calling thread's
    /// TLB for the range only, and when <paramref name="waitForAccesses"/> waits for accesses already under way on
    /// other threads to finish, so that the caller may free what the old translations pointed at. Returns the new
    /// generation.
    /// </summary>
    private protected long Flush(ulong start, ulong end, bool waitForAccesses)
    {
        if (end == ulong.MaxValue) Interlocked.Increment(ref _flushAll);
        else if (end - start <= VirtualAddress.PageSize) Interlocked.Increment(ref _flushPage);
        else Interlocked.Increment(ref _flushRange);
        long newGen = Interlocked.Increment(ref _tlbGen);
        var me = (ThreadTlb*)_tlbs.Current;
        if (me != null && me->Gen == newGen - 1)
        {
            if (end - start <= (ulong)SinglePageFlushCeiling * VirtualAddress.PageSize)
            {
                for (ulong va = start & ThreadTlb.KeyMask; va < end; va += VirtualAddress.PageSize) ThreadTlb.ClearPage(me, va);
            }
            else
            {
                ThreadTlb.Clear(me);
            }
            Volatile.Write(ref me->Gen, newGen);
        }
        if (waitForAccesses)
        {
            WaitForRemoteAccesses(me, newGen);
            BatchedFlushDone(newGen);
        }
        return newGen;
    }

    /// <summary>After a shootdown of generation <paramref name="gen"/>: a reclaim batch's pending one up to it is done too.</summary>
    private protected virtual void BatchedFlushDone(long gen)
    {
    }

    /// <summary>
    /// True when a thread other than the caller has a TLB in this space. Read after an entry changed: a thread that
    /// registers later walks the changed tables, so only one counted here can hold the old translation.
    /// </summary>
    private protected bool OtherTlbUsers() => OtherTlbThreads((ThreadTlb*)_tlbs.Current) > 0;

    /// <summary>Threads other than the one whose TLB is <paramref name="me"/> (null: the caller has none here) with a TLB in this space.</summary>
    private int OtherTlbThreads(ThreadTlb* me) => Volatile.Read(ref _tlbThreads) - (me != null ? 1 : 0);

    /// <summary>
    /// The wait of a shootdown whose generation was bumped earlier (<see cref="Flush"/> without waiting): returns once
    /// no other thread is inside an access that began before <paramref name="gen"/>. <paramref name="barrierDone"/>:
    /// the caller ran the process-wide barrier after the bump (a batch runs one for all its address spaces).
    /// </summary>
    private protected void WaitForGeneration(long gen, bool barrierDone)
        => WaitForRemoteAccesses((ThreadTlb*)_tlbs.Current, gen, barrierDone);

    /// <summary>
    /// The TLB shootdown's wait: returns once no other thread is inside an access that began before the flush.
    /// Each other thread is either seen idle (Busy 0), or seen to have acknowledged the new generation, which it does
    /// at the start of its next access; so a thread in a tight loop of hits cannot hold the flusher up.
    /// </summary>
    private void WaitForRemoteAccesses(ThreadTlb* me, long newGen, bool barrierDone = false)
    {
        if (OtherTlbThreads(me) <= 0) return;
        Interlocked.Increment(ref _shootdowns);
        // Every thread's store of Busy = 1 is now visible, or its next load of the generation sees the bump.
        if (!barrierDone) Interlocked.MemoryBarrierProcessWide();
        WaitForEachTlb(newGen);
    }

    // Separate so that the closure is only allocated when there is something to wait for.
    private void WaitForEachTlb(long newGen) => _tlbs.ForEach(p => WaitQuiescent((ThreadTlb*)p, newGen));

    private static void WaitQuiescent(ThreadTlb* tlb, long newGen)
    {
        if (Volatile.Read(ref tlb->Busy) == 0) return;
        var spin = new SpinWait();
        while (Volatile.Read(ref tlb->Busy) != 0 && Volatile.Read(ref tlb->Gen) < newGen) spin.SpinOnce(sleep1Threshold: 30);
    }

    /// <summary>TLB counters summed over every thread, live and exited.</summary>
    public TlbStatistics TlbStatistics
    {
        get
        {
            long hits = 0, misses = 0, local = 0;
            _tlbs.ForEach(p =>
            {
                var t = (ThreadTlb*)p;
                hits += Volatile.Read(ref t->Hits);
                misses += Volatile.Read(ref t->Misses);
                local += Volatile.Read(ref t->FullFlushes) + Volatile.Read(ref t->PageFlushes);
            });
            lock (_retiredLock)
            {
                hits += _retiredHits;
                misses += _retiredMisses;
                local += _retiredLocalFlushes;
            }
            return new TlbStatistics(hits, misses, Interlocked.Read(ref _flushPage), Interlocked.Read(ref _flushRange),
                Interlocked.Read(ref _flushAll), Interlocked.Read(ref _shootdowns), local, Volatile.Read(ref _tlbThreads));
        }
    }

    void IThreadCacheOwner.FlushCache(ThreadCacheHeader* cache) => ThreadTlb.Clear((ThreadTlb*)cache);

    void IThreadCacheOwner.InitCache(ThreadCacheHeader* cache)
    {
        // A zeroed TLB is an empty one.
    }

    // A TLB refills itself from the page tables in a few walks; an exited thread's is retired, not adopted.
    bool IThreadCacheOwner.AdoptCache(ThreadCacheHeader* cache) => false;

    void IThreadCacheOwner.RetireCache(ThreadCacheHeader* cache)
    {
        var t = (ThreadTlb*)cache;
        lock (_retiredLock)
        {
            _retiredHits += t->Hits;
            _retiredMisses += t->Misses;
            _retiredLocalFlushes += t->FullFlushes + t->PageFlushes;
        }
        if (t->Initialized != 0) Interlocked.Decrement(ref _tlbThreads);
    }
}
