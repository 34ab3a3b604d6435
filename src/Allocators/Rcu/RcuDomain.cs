using System.Diagnostics;
using System.Runtime.CompilerServices;
using Allocators.Threading;

namespace Allocators.Rcu;

/// <summary>
/// Read-copy-update for the library's lockless readers (the kernel's RCU, in the epoch-based form of userspace RCU's
/// "mb" flavour): a reader brackets its accesses with <see cref="RcuReadLock"/>/<see cref="RcuReadUnlock"/>; an updater
/// unpublishes an object, then either waits with <see cref="SynchronizeRcu"/> or hands the free to
/// <see cref="CallRcu(Action)"/> (kfree_rcu: <c>SlabAllocator.KfreeRcu</c>), which runs after a grace period on a
/// background thread, in batches. One domain per page allocator (<c>PageAllocator.Rcu</c>); the page cache's lockless
/// lookups, <c>SlabFlags.TypesafeByRcu</c> caches and the deferred frees all use it.
/// </summary>
/// <remarks>
/// <para><b>State.</b> Each thread has a record (<see cref="RcuThread"/>, native memory, found through a thread-static
/// table: no lock, no shared line) whose <c>Ctr</c> = <c>snapshot | nesting</c>: the grace-period counter
/// <c>_gp</c> (a multiple of <see cref="NestUnit"/>) read by the outermost read lock, plus the nesting depth.</para>
/// <para><b>Invariants</b> (debug-asserted where they are established):</para>
/// <list type="bullet">
/// <item>R1 reader(t) ⇔ nesting(t) = Ctr(t) &amp; NestMask &gt; 0; only t writes Ctr(t).</item>
/// <item>R2 snapshot(t) = Ctr(t) &amp; ~NestMask ≤ _gp, and _gp only grows (by NestUnit).</item>
/// <item>G1 a grace period with target T = _gp after its increment ends only once, for every record t,
/// nesting(t) = 0 or snapshot(t) ≥ T has been observed; so every read section that began before the increment has
/// ended, and none that began after it is waited for (a synchronizer cannot be starved).</item>
/// <item>G2 _completed ≤ _gp; _completed = the largest T whose grace period has ended.</item>
/// <item>C1 a callback queued before a grace period's increment runs only after that grace period ends (the worker
/// collects, then synchronizes, then runs).</item>
/// <item>C2 <see cref="RcuBarrier"/> returns only when _barrierDone ≥ its request: every callback queued before the
/// call has run.</item>
/// </list>
/// <para><b>Ordering.</b> Dekker on both sides: the outermost read lock stores Ctr with a full fence
/// (<see cref="Interlocked.Exchange(ref long, long)"/>) before the reader's loads; an updater's unpublishing store is
/// separated from its reads of the records by the fenced increment of _gp. So either the grace period sees the reader,
/// or the reader sees the object gone. Nested locks and every unlock are plain stores (release).</para>
/// <para><b>Locks.</b> <c>_gpLock</c> serialises grace periods (a synchronizer whose need another one met returns
/// without waiting); the thread registry's lock (7 in docs/locking.md) is held while one pass reads the records, so none is
/// freed meanwhile (never while waiting: a new thread's first read lock registers under it); <c>_queueLock</c> (leaf) guards the shared batch lists; the <c>_wake</c> monitor (leaf) the worker's
/// and barrier waiters' state. A thread inside a read section must not wait for a grace period:
/// <see cref="SynchronizeRcu"/> and <see cref="RcuBarrier"/> throw there, as the kernel's lockdep reports it.</para>
/// </remarks>
public sealed unsafe partial class RcuDomain : IThreadCacheOwner, IDisposable
{
    /// <summary>Bits of <see cref="RcuThread.Ctr"/> that count nesting.</summary>
    internal const int NestBits = 16;
    internal const long NestUnit = 1L << NestBits;
    internal const long NestMask = NestUnit - 1;

    private readonly ThreadCacheRegistry _threads;
    private readonly Lock _gpLock = new();
    private readonly Action<nint> _checkReader;
    private long _gp = NestUnit;
    private long _completed = NestUnit;
    private long _scanTarget;   // the target of the grace period under way (_gpLock)
    private bool _scanBlocked;  // the last pass found a reader the grace period waits for (_gpLock)
    private long _gracePeriods;

    /// <summary>Creates a domain; its callback thread starts with the first queued callback.</summary>
    public RcuDomain()
    {
        _threads = new ThreadCacheRegistry(this, sizeof(RcuThread));
        _checkReader = CheckReader;
    }

    /// <summary>The grace-period counter: grows by <see cref="NestUnit"/> when a grace period starts (for tests).</summary>
    internal long GpSequence => Volatile.Read(ref _gp);

    /// <summary>Grace periods completed so far.</summary>
    public long GracePeriods => Volatile.Read(ref _gracePeriods);

    /// <summary>
    /// Enters a read-side critical section (rcu_read_lock). Nests. Objects the caller finds published stay allocated
    /// until the matching <see cref="RcuReadUnlock"/>. No lock and no write to a line another thread writes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RcuReadLock()
    {
        var t = (RcuThread*)_threads.GetOrCreateCurrent();
        long c = t->Ctr;
        if ((c & NestMask) == 0) Interlocked.Exchange(ref t->Ctr, Volatile.Read(ref _gp) | 1);
        else
        {
            Debug.Assert((c & NestMask) != NestMask, "RCU read sections nested too deep");
            Volatile.Write(ref t->Ctr, c + 1);
        }
    }

    /// <summary>Leaves a read-side critical section (rcu_read_unlock).</summary>
    /// <exception cref="InvalidOperationException">The calling thread is not inside a read section.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RcuReadUnlock()
    {
        var t = (RcuThread*)_threads.Current;
        long c;
        if (t == null || ((c = t->Ctr) & NestMask) == 0) ThrowUnbalanced();
        else Volatile.Write(ref t->Ctr, (c & NestMask) == 1 ? 0 : c - 1);
    }

    /// <summary>A read section for <c>using</c>: <c>using (rcu.ReadSection()) { ... }</c>.</summary>
    public ReadGuard ReadSection()
    {
        RcuReadLock();
        return new ReadGuard(this);
    }

    /// <summary>Leaves the read section <see cref="ReadSection"/> entered when disposed.</summary>
    public readonly struct ReadGuard : IDisposable
    {
        private readonly RcuDomain _rcu;
        internal ReadGuard(RcuDomain rcu) => _rcu = rcu;

        /// <summary>Calls <see cref="RcuReadUnlock"/>.</summary>
        public void Dispose() => _rcu.RcuReadUnlock();
    }

    /// <summary>True when the calling thread is inside a read section (rcu_read_lock_held).</summary>
    public bool InReadSection
    {
        get
        {
            var t = (RcuThread*)_threads.Current;
            return t != null && (Volatile.Read(ref t->Ctr) & NestMask) != 0;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUnbalanced()
        => throw new InvalidOperationException("rcu_read_unlock without a matching rcu_read_lock on this thread.");

    /// <summary>
    /// Waits until every read section that began before the call has ended (synchronize_rcu). Sections that begin
    /// meanwhile are not waited for. Concurrent callers share grace periods.
    /// </summary>
    /// <exception cref="InvalidOperationException">The calling thread is inside a read section (it would wait for itself).</exception>
    public void SynchronizeRcu()
    {
        if (InReadSection) throw new InvalidOperationException("synchronize_rcu inside an RCU read-side critical section would wait for itself.");
        // The fenced read orders the caller's unpublishing stores before everything a grace period reads afterwards.
        long start = Interlocked.CompareExchange(ref _gp, 0, 0);
        lock (_gpLock)
        {
            // A grace period that began after our start has already waited for every reader we must wait for.
            if (Volatile.Read(ref _completed) > start) return;
            long target = Interlocked.Add(ref _gp, NestUnit);
            _scanTarget = target;
            // Each pass holds the registry lock only to read the records (so a thread registering for its first read
            // lock never waits for a grace period); between passes the records may change, never a reader's snapshot.
            var spin = new SpinWait();
            while (true)
            {
                _scanBlocked = false;
                _threads.ForEach(_checkReader);
                if (!_scanBlocked) break;
                spin.SpinOnce(sleep1Threshold: 20);
            }
            Debug.Assert(Volatile.Read(ref _completed) < target);
            Volatile.Write(ref _completed, target);
            _gracePeriods++;
        }
    }

    /// <summary>Notes in <c>_scanBlocked</c> whether the record's thread is inside a read section that began before <c>_scanTarget</c>.</summary>
    private void CheckReader(nint record)
    {
        long c = Volatile.Read(ref ((RcuThread*)record)->Ctr);
        if ((c & NestMask) == 0 || (c & ~NestMask) >= _scanTarget) return;
        Debug.Assert((c & ~NestMask) <= Volatile.Read(ref _gp));
        _scanBlocked = true;
    }

    void IThreadCacheOwner.InitCache(ThreadCacheHeader* cache) { }

    /// <summary>A thread's queued callbacks go to the shared list (its thread exited, or the worker collects).</summary>
    void IThreadCacheOwner.FlushCache(ThreadCacheHeader* cache)
    {
        var t = (RcuThread*)cache;
        RcuBatch* batch = t->Batch;
        if (batch == null) return;
        t->Batch = null;
        if (batch->Count == 0) ReturnSpare(batch);
        else PushPending(batch);
    }

    /// <summary>An exited thread is in no read section, whatever it left in its record.</summary>
    void IThreadCacheOwner.RetireCache(ThreadCacheHeader* cache) => Volatile.Write(ref ((RcuThread*)cache)->Ctr, 0);

    bool IThreadCacheOwner.AdoptCache(ThreadCacheHeader* cache)
    {
        Volatile.Write(ref ((RcuThread*)cache)->Ctr, 0);
        return true;
    }
}
