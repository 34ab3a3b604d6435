using System.Diagnostics;

namespace Allocators.PageAlloc;

/// <summary>
/// __GFP_NOFAIL on the slow path: who may ask for it, the reserves it gets once reclaim has failed, and the waiting
/// that follows, reported while it lasts.
/// </summary>
public sealed unsafe partial class PageAllocator
{
    private const int CostlyOrder = PcpMaxOrder; // PAGE_ALLOC_COSTLY_ORDER

    private long _allocStalls;
    private int _noFailOrderWarned;

    /// <summary>
    /// Raised on the waiting thread each time a <see cref="Gfp.NoFail"/> request has waited another
    /// <see cref="PageAllocatorOptions.StallWarningInterval"/> for memory. Handlers must not block on memory themselves.
    /// </summary>
    public event Action<AllocationStall>? AllocationStalled;

    /// <summary>Stall reports given (<see cref="AllocationStalled"/>).</summary>
    public long AllocStalls => Interlocked.Read(ref _allocStalls);

    /// <summary>Rejects NOFAIL requests that can never be honoured, before anything changes; warns about risky ones.</summary>
    private void CheckNoFailRequest(Gfp gfp, int order)
    {
        gfp.ThrowIfNoFailCannotBlock();
        if ((uint)order > MaxOrder)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"Gfp.NoFail allocation of order {order}: above MAX_PAGE_ORDER {MaxOrder}, it can never succeed.");
        if (order > 1) WarnNoFailCostlyOrder(gfp, order);
    }

    /// <summary>
    /// The kernel's WARN_ON_ONCE for __GFP_NOFAIL above order 1: such a block may never form, so the caller may wait
    /// forever. The allocation still goes ahead (it usually succeeds); the warning is given once per allocator.
    /// </summary>
    private void WarnNoFailCostlyOrder(Gfp gfp, int order)
    {
        if (Interlocked.Exchange(ref _noFailOrderWarned, 1) != 0) return;
        Interlocked.Increment(ref _warnings);
        if (!WarningsWanted) return;
        Deliver(new PageAllocatorWarning(PageAllocatorWarningKind.Misuse, gfp, order,
            $"allocators: WARNING: __GFP_NOFAIL with order {order} > 1, mode:0x{(uint)gfp:x}({gfp.Describe()}): costly orders are not guaranteed and may wait forever"), default);
    }

    /// <summary>
    /// True for a NOFAIL request the kernel's OOM path (__alloc_pages_may_oom) would let ignore the watermarks once
    /// reclaim has failed: small orders only, not bound to a node, not content with failing, and allowed into Normal.
    /// Otherwise even the last free pages would stay out of reach below the reserve share it gets, however long it waits.
    /// </summary>
    private static bool NoFailMayIgnoreWatermarks(Gfp gfp, int order, int highestZone)
        => (gfp & Gfp.NoFail) != 0 && order <= CostlyOrder && (gfp & (Gfp.RetryMayFail | Gfp.ThisNode)) == 0
            && highestZone >= (int)ZoneType.Normal;

    /// <summary>
    /// The slow path's stall check: once a request has been in the allocator until <paramref name="due"/>, it is
    /// counted, reported (warn_alloc "page allocation stalls for", even with NoWarn, as the kernel does) and raised.
    /// </summary>
    /// <returns>When the next report is due.</returns>
    private long ReportStallIfDue(Gfp gfp, int order, long start, long due)
    {
        long now = Stopwatch.GetTimestamp();
        if (now < due) return due;
        Interlocked.Increment(ref _warnings);
        Interlocked.Increment(ref _allocStalls);
        if (WarningsWanted || AllocationStalled != null)
        {
            TimeSpan elapsed = Stopwatch.GetElapsedTime(start, now);
            string text = WarnAllocText(gfp & ~Gfp.NoWarn, $"page allocation stalls for {(long)elapsed.TotalMilliseconds}ms, order:{order}");
            Deliver(new PageAllocatorWarning(PageAllocatorWarningKind.AllocationStall, gfp, order, text), elapsed);
            AllocationStalled?.Invoke(new AllocationStall(gfp, order, elapsed, text));
        }
        return due + _stallTicks;
    }

    /// <summary>Sleeps until a free reaches a zone, or a few milliseconds pass (pages freed onto per-thread lists signal nothing).</summary>
    private void WaitForFreedPages()
    {
        Interlocked.Increment(ref _noFailWaiters);
        try
        {
            lock (_freeSignal) Monitor.Wait(_freeSignal, 5);
        }
        finally
        {
            Interlocked.Decrement(ref _noFailWaiters);
        }
    }
}
