namespace Allocators.PageAlloc;

/// <summary>
/// The reclaim and swap event counters of one memory system, as /proc/vmstat names them (mm/vmstat.c). Updated with
/// interlocked adds by whichever thread does the work; read without a lock.
/// </summary>
public sealed class ReclaimCounters
{
    internal long PgScanKswapd, PgScanDirect, PgStealKswapd, PgStealDirect;
    internal long PgActivate, PgDeactivate, PgRefill;
    internal long PswpIn, PswpOut, SwapRa, SwapRaHit;
    internal long WorkingsetRefaultAnon, WorkingsetRefaultFile, WorkingsetActivateAnon, WorkingsetActivateFile;
    internal long KswapdWakeups; // pageoutrun: kswapd balancing runs
    internal long OomKill;
    internal long SwapWriteErrors;
    internal long NoIoSkipped, NoFsSkipped;

    /// <summary>Pages swapped in (pswpin).</summary>
    public long PagesSwappedIn => Volatile.Read(ref PswpIn);

    /// <summary>Pages swapped out (pswpout).</summary>
    public long PagesSwappedOut => Volatile.Read(ref PswpOut);

    /// <summary>Pages scanned by kswapd (pgscan_kswapd).</summary>
    public long ScannedByKswapd => Volatile.Read(ref PgScanKswapd);

    /// <summary>Pages scanned by direct reclaim (pgscan_direct).</summary>
    public long ScannedDirect => Volatile.Read(ref PgScanDirect);

    /// <summary>Pages reclaimed by kswapd (pgsteal_kswapd).</summary>
    public long StolenByKswapd => Volatile.Read(ref PgStealKswapd);

    /// <summary>Pages reclaimed by direct reclaim (pgsteal_direct).</summary>
    public long StolenDirect => Volatile.Read(ref PgStealDirect);

    /// <summary>Processes killed by the OOM killer (oom_kill).</summary>
    public long OomKills => Volatile.Read(ref OomKill);

    /// <summary>Anonymous pages that came back soon after eviction (workingset_refault_anon).</summary>
    public long RefaultsAnon => Volatile.Read(ref WorkingsetRefaultAnon);

    /// <summary>File pages that came back soon after eviction (workingset_refault_file).</summary>
    public long RefaultsFile => Volatile.Read(ref WorkingsetRefaultFile);

    /// <summary>Swap writes that failed (the page stayed in memory, dirty).</summary>
    public long SwapWriteFailures => Volatile.Read(ref SwapWriteErrors);

    /// <summary>
    /// Reclaim decisions not taken because the caller's gfp forbade them: swap-outs skipped for lack of __GFP_IO,
    /// file write-backs skipped for lack of __GFP_FS.
    /// </summary>
    public (long NoIo, long NoFs) SkippedForGfp => (Volatile.Read(ref NoIoSkipped), Volatile.Read(ref NoFsSkipped));

    /// <summary>The counters as /proc/vmstat prints them, in its order.</summary>
    public IEnumerable<(string Name, long Value)> Items()
    {
        yield return ("workingset_refault_anon", Volatile.Read(ref WorkingsetRefaultAnon));
        yield return ("workingset_refault_file", Volatile.Read(ref WorkingsetRefaultFile));
        yield return ("workingset_activate_anon", Volatile.Read(ref WorkingsetActivateAnon));
        yield return ("workingset_activate_file", Volatile.Read(ref WorkingsetActivateFile));
        yield return ("pswpin", Volatile.Read(ref PswpIn));
        yield return ("pswpout", Volatile.Read(ref PswpOut));
        yield return ("pgactivate", Volatile.Read(ref PgActivate));
        yield return ("pgdeactivate", Volatile.Read(ref PgDeactivate));
        yield return ("pgrefill", Volatile.Read(ref PgRefill));
        yield return ("pgsteal_kswapd", Volatile.Read(ref PgStealKswapd));
        yield return ("pgsteal_direct", Volatile.Read(ref PgStealDirect));
        yield return ("pgscan_kswapd", Volatile.Read(ref PgScanKswapd));
        yield return ("pgscan_direct", Volatile.Read(ref PgScanDirect));
        yield return ("swap_ra", Volatile.Read(ref SwapRa));
        yield return ("swap_ra_hit", Volatile.Read(ref SwapRaHit));
        yield return ("oom_kill", Volatile.Read(ref OomKill));
        yield return ("pageoutrun", Volatile.Read(ref KswapdWakeups));
    }
}
