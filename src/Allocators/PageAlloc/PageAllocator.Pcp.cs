using Allocators.Kasan;
using System.Runtime.CompilerServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private readonly long[] _retiredCounters;
    private long _pcpRefills;
    private long _pcpFlushes;
    private long _pcpDrains;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PcpList* PcpLists(ThreadCacheHeader* cache) => (PcpList*)((byte*)cache + _pcpListsOffset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ZoneEventCounters* Counters(ThreadCacheHeader* cache) => (ZoneEventCounters*)((byte*)cache + _pcpCountersOffset);

    /// <summary>
    /// Returns every page on every thread's page lists, and with KASAN every block in its quarantine, to the buddy lists,
    /// where they merge (drain_all_pages). Safe to call from any thread at any time; runs automatically before an
    /// allocation would fail.
    /// </summary>
    public void DrainAllPages()
    {
        _kasan?.Quarantine.Flush(KasanQuarantine.PageOwner); // KASAN's quarantined blocks are free pages held back too
        _pcp.DrainAll();
        Interlocked.Increment(ref _pcpDrains);
    }

    /// <summary>Pages currently held on per-thread page lists (they are free but not in the buddy lists).</summary>
    public long PcpPages
    {
        get
        {
            long total = 0;
            _pcp.ForEach(p =>
            {
                PcpList* lists = PcpLists((ThreadCacheHeader*)p);
                for (int i = 0; i < _zoneCount * PcpOrders; i++) total += (long)lists[i].Count << (i % PcpOrders);
            });
            return total;
        }
    }

    /// <summary>Number of threads that have page lists.</summary>
    public int PcpThreadCount => _pcp.Count;

    void IThreadCacheOwner.FlushCache(ThreadCacheHeader* cache)
    {
        PcpList* lists = PcpLists(cache);
        for (int zoneId = 0; zoneId < _zoneCount; zoneId++)
        {
            for (int order = 0; order < PcpOrders; order++)
            {
                PcpList* list = lists + zoneId * PcpOrders + order;
                if (list->Count > 0) FlushPcpBatch(list, _zones + zoneId, order, list->Count);
            }
        }
    }

    void IThreadCacheOwner.InitCache(ThreadCacheHeader* cache)
    {
        PcpList* lists = PcpLists(cache);
        byte* slots = (byte*)cache + _pcpSlotsOffset;
        for (int zoneId = 0; zoneId < _zoneCount; zoneId++)
        {
            for (int order = 0; order < PcpOrders; order++)
            {
                PcpList* list = lists + zoneId * PcpOrders + order;
                list->Mask = _pcpCapacity[order] - 1;
                list->High = _pcpHigh[order];
                list->Batch = _pcpBatch[order];
                list->SlotsOffset = (int)(slots - (byte*)list);
                slots += _pcpCapacity[order] * sizeof(nint);
            }
        }
    }

    // An exited thread's page lists and counters carry on in the thread that takes them over: nothing in them is about a thread.
    bool IThreadCacheOwner.AdoptCache(ThreadCacheHeader* cache) => true;

    void IThreadCacheOwner.RetireCache(ThreadCacheHeader* cache)
    {
        long* counters = (long*)Counters(cache);
        for (int i = 0; i < _retiredCounters.Length; i++) _retiredCounters[i] += counters[i];
    }

    /// <summary>Sum of one per-zone event counter over all threads, live and exited.</summary>
    private long SumZoneEvent(int zoneId, ZoneEvent ev)
    {
        int index = zoneId * ZoneEventCounters.Count + (int)ev;
        // numa_local is not counted: every allocation served by a zone is a hit or a miss there, and local or other,
        // so local = hit + miss - other (one RMW fewer on the allocation fast path). All three are read in one pass.
        int hit = zoneId * ZoneEventCounters.Count + (int)ZoneEvent.NumaHit;
        int miss = hit + ((int)ZoneEvent.NumaMiss - (int)ZoneEvent.NumaHit);
        int other = hit + ((int)ZoneEvent.NumaOther - (int)ZoneEvent.NumaHit);
        bool local = ev == ZoneEvent.NumaLocal;
        long total = 0;
        void Add(long* counters)
        {
            total += local ? counters[hit] + counters[miss] - counters[other] : counters[index];
        }
        // Retiring a cache moves its counters into _retiredCounters under the registry lock; reading the retired totals
        // under that same lock, together with the live caches, counts every cache exactly once.
        _pcp.ForEach(p => Add((long*)Counters((ThreadCacheHeader*)p)),
            () =>
            {
                fixed (long* retired = _retiredCounters) Add(retired);
            });
        return total;
    }

    private long SumZoneEvent(ZoneEvent ev)
    {
        long total = 0;
        for (int z = 0; z < _zoneCount; z++) total += SumZoneEvent(z, ev);
        return total;
    }
}
