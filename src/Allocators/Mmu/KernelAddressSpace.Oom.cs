using Allocators.PageAlloc;

namespace Allocators.Mmu;

public sealed unsafe partial class KernelAddressSpace
{
    /// <summary>
    /// out_of_memory: reclaim made no progress, so the process with the highest badness (oom_badness) is killed and
    /// its memory reaped; the report goes to the kernel log in the kernel's words. False when no process may be chosen.
    /// </summary>
    internal bool OutOfMemory(Gfp gfp, int order)
    {
        long total = Pages.ManagedPages + (_swap?.Table.TotalPages ?? 0);
        AddressSpace? victim = null;
        long best = long.MinValue;
        AddressSpace[] processes = Processes();
        // A victim whose memory has not gone yet comes first: no second process dies while it may still be freed.
        foreach (AddressSpace p in processes)
            if (p.IsOomKilled && !p.OomReaped && !p.IsDisposed) return p.TryReap();
        foreach (AddressSpace p in processes)
        {
            long points = p.OomBadness(total);
            if (points > best)
            {
                best = points;
                victim = p;
            }
        }
        if (victim == null || best == long.MinValue) return false;
        string header = $"{Thread.CurrentThread.Name ?? "thread"} invoked oom-killer: gfp_mask={gfp}, order={order}, oom_score_adj=0";
        string report = victim.OomKill(out bool reaped);
        lock (_log)
        {
            _log.Add(header);
            _log.Add(report);
        }
        Interlocked.Increment(ref Pages.ReclaimCounters.OomKill);
        return reaped;
    }
}
