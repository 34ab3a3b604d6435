using System.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Buffers;

// How a pool gives memory back, the kernel's way, on by default:
//  - the reaper (cache_reap), every TrimInterval: threads that did not touch the pool hand their magazines back,
//    busy threads send half of what sat in each magazine through the whole period (its low-water mark, as jemalloc's
//    tcache GC does) to the depot, and half of what sat in each depot through the whole period is evicted; a pool
//    nobody used for a whole period is trimmed to nothing, and its memory goes back to the host (free pages reported
//    for native buffers, a garbage collection that decommits for arrays);
//  - the shrinker (native buffers): the page allocator, about to fail an allocation, has the depots evicted;
//  - an array rent that finds the garbage-collected heap full trims the pool before it fails.
// All of it runs on slow paths or a timer thread; the depots' spin locks and the registry's lock are the only locks.
public sealed unsafe partial class NativeMemoryPool
{
    /// <summary>
    /// Array bytes evicted by every pool of the process (Kestrel runs two) and not yet collected: an idle pool asks
    /// the garbage collector to give memory back once they reach <see cref="CollectThreshold"/>.
    /// </summary>
    private static long s_uncollectedArrayBytes;

    private Func<ShrinkControl, long>? _shrinker;
    private Timer? _reaper;
    private long _opsAtLastReap = -1;
    private int _reaping;

    /// <summary>
    /// Gives back every pooled buffer: every thread's cache and the shared stacks are emptied (drop_caches). Buffers
    /// rented out are not touched. Returns the bytes evicted. Must not be called from a <see cref="RentFailed"/> handler.
    /// </summary>
    public long Trim()
    {
        if (_disposed) return 0;
        try
        {
            _caches.DrainAll();
        }
        catch (ObjectDisposedException)
        {
            return 0;
        }
        return EvictDepots();
    }

    /// <summary>
    /// Evicts what the depots hold, up to about <paramref name="limitBytes"/>; returns the bytes this call evicted (not
    /// what other threads evicted meanwhile, which a shrinker must not be credited with).
    /// </summary>
    private long EvictDepots(long limitBytes = long.MaxValue)
    {
        long evicted = 0;
        Span<int> ids = stackalloc int[256];
        fixed (int* buffer = ids)
        {
            for (int c = 0; c < PoolSizeClasses.Count; c++)
            {
                PoolDepot* depot = _depots + c;
                int n;
                while (evicted < limitBytes && (n = PoolDepot.Pop(depot, buffer, ids.Length)) > 0)
                {
                    long bytes = (long)n * depot->Length;
                    Interlocked.Add(ref _counters->DepotBytes, -bytes);
                    for (int i = 0; i < n; i++) Evict(_owners.Get(buffer[i]));
                    evicted += bytes;
                }
            }
        }
        return evicted;
    }

    /// <summary>One reaper period; see the file header. Runs on a timer thread, one at a time.</summary>
    internal void Reap()
    {
        if (_disposed || Interlocked.Exchange(ref _reaping, 1) != 0) return;
        try
        {
            Interlocked.Increment(ref _counters->Reaps);
            MemoryPoolStatistics stats = Statistics();
            long ops = stats.TotalRents + stats.TotalReturns;
            bool idle = ops == _opsAtLastReap;
            _opsAtLastReap = ops;
            if (idle)
            {
                if (stats.PooledBytes > 0) Trim();
                GiveBackToHost();
                return;
            }
            _caches.DrainAll(ReapCache, holds: QuietAndHolding);
            ReapDepots();
        }
        catch (ObjectDisposedException)
        {
            // Disposed meanwhile.
        }
        finally
        {
            Volatile.Write(ref _reaping, 0);
        }
    }

    /// <summary>
    /// True for a thread's cache that holds buffers: the reaper takes it (<see cref="ReapCache"/>). Notes whether its
    /// thread rented or returned since the last look.
    /// </summary>
    private bool QuietAndHolding(nint block)
    {
        var cache = (ThreadCacheHeader*)block;
        PoolThreadStats* stats = PoolThreadCache.Stats(cache);
        long ops = Volatile.Read(ref stats->Rents) + Volatile.Read(ref stats->Returns);
        stats->QuietAtLastReap = ops == stats->OpsAtLastReap;
        stats->OpsAtLastReap = ops;
        for (int c = 0; c < PoolSizeClasses.Count; c++)
            if (Volatile.Read(ref PoolThreadCache.Magazine(cache, c)->Count) != 0) return true;
        return false;
    }

    /// <summary>
    /// The reaper's work on one thread's cache, its thread held off: a quiet thread's magazines go to the depots whole;
    /// a busy thread's send half of their low-water mark (buffers unused through the whole period), and the marks
    /// start again from what is left.
    /// </summary>
    private void ReapCache(nint block)
    {
        var cache = (ThreadCacheHeader*)block;
        if (PoolThreadCache.Stats(cache)->QuietAtLastReap)
        {
            ((IThreadCacheOwner)this).FlushCache(cache);
            return;
        }
        for (int c = 0; c < PoolSizeClasses.Count; c++)
        {
            PoolMagazine* magazine = PoolThreadCache.Magazine(cache, c);
            Debug.Assert(magazine->LowWater >= 0 && magazine->LowWater <= magazine->Count);
            int surplus = (magazine->LowWater + 1) / 2;
            if (surplus > 0)
            {
                magazine->Count -= surplus;
                ToDepot(c, magazine->Slots + magazine->Count, surplus);
            }
            magazine->LowWater = magazine->Count;
        }
    }

    private void ReapDepots()
    {
        Span<int> ids = stackalloc int[1024];
        fixed (int* buffer = ids)
        {
            for (int c = 0; c < PoolSizeClasses.Count; c++)
            {
                PoolDepot* depot = _depots + c;
                if (Volatile.Read(ref depot->Count) == 0) { depot->LowWater = 0; continue; }
                int n = PoolDepot.TakeIdle(depot, buffer, ids.Length);
                if (n == 0) continue;
                Interlocked.Add(ref _counters->DepotBytes, -(long)n * depot->Length);
                for (int i = 0; i < n; i++) Evict(_owners.Get(buffer[i]));
            }
        }
    }

    /// <summary>
    /// An idle pool's evicted memory leaves the process: native pages freed to the buddy lists are reported to the
    /// host, and evicted arrays (pinned, on the pinned object heap) are collected with a decommitting collection,
    /// since an idle server allocates nothing that would trigger one.
    /// </summary>
    private void GiveBackToHost()
    {
        if (!_arrays)
        {
            if (!_pages.IsDisposed) _pages.ReleaseFreeMemory();
            return;
        }
        // The GC's figures are read only once there is enough to collect at the smallest threshold.
        long uncollected = Volatile.Read(ref s_uncollectedArrayBytes);
        if (uncollected < MinCollectBytes || uncollected < CollectThreshold(GC.GetGCMemoryInfo().TotalCommittedBytes)) return;
        // One idle pool collects for all: the first to take the count; another reaper finds it gone.
        if (Interlocked.Exchange(ref s_uncollectedArrayBytes, 0) <= 0) return;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>
    /// Evicted array bytes worth a decommitting collection: an eighth of what the garbage collector had committed at
    /// its last collection, at least 1 MiB and at most 8 MiB (a burst through a small heap is a large share of it).
    /// </summary>
    internal static long CollectThreshold(long gcCommittedBytes) => Math.Clamp(gcCommittedBytes / 8, MinCollectBytes, 8L << 20);

    private const long MinCollectBytes = 1L << 20;

    /// <summary>Evicted array bytes of every pool not yet given back by a collection (tests).</summary>
    internal static long UncollectedArrayBytes => Volatile.Read(ref s_uncollectedArrayBytes);

    private void StartReaper()
    {
        if (Options.TrimInterval is not { } period) return;
        // The timer holds the pool weakly: a pool nobody disposed can still be collected, and its timer then stops.
        var holder = new ReaperHolder(new WeakReference<NativeMemoryPool>(this));
        _reaper = holder.Timer = new Timer(static s => ((ReaperHolder)s!).Tick(), holder, period, period);
    }

    private void StopReaper() => _reaper?.Dispose();

    private void RegisterShrinker()
    {
        _shrinker = control => EvictDepots(control.NrToScan * PageFrame.PageSize) / PageFrame.PageSize;
        _pages.RegisterShrinker(_shrinker);
    }

    private void UnregisterShrinker()
    {
        if (_shrinker != null) _pages.UnregisterShrinker(_shrinker);
    }

    private sealed class ReaperHolder(WeakReference<NativeMemoryPool> pool)
    {
        public Timer? Timer;

        public void Tick()
        {
            if (pool.TryGetTarget(out NativeMemoryPool? p)) p.Reap();
            else Timer?.Dispose();
        }
    }
}
