namespace Allocators.Mmu;

/// <summary>Thrown by an access to an address space the OOM killer has killed.</summary>
public sealed class ProcessKilledException : InvalidOperationException
{
    /// <summary>Creates the exception for process <paramref name="pid"/> named <paramref name="comm"/>.</summary>
    public ProcessKilledException(int pid, string comm)
        : base($"Process {pid} ({comm}) was killed by the OOM killer (SIGKILL); its memory is gone.")
    {
        Pid = pid;
    }

    /// <summary>The killed process.</summary>
    public int Pid { get; }
}

public sealed unsafe partial class AddressSpace
{
    private int _oomScoreAdj;
    private volatile bool _oomKilled;

    /// <summary>/proc/pid/oom_score_adj: -1000 (never kill) .. 1000 (kill first), added to the badness in thousandths of memory.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside -1000..1000.</exception>
    public int OomScoreAdj
    {
        get => Volatile.Read(ref _oomScoreAdj);
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, -1000);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 1000);
            Volatile.Write(ref _oomScoreAdj, value);
        }
    }

    /// <summary>True once the OOM killer chose this address space: every access faults with <see cref="ProcessKilledException"/>.</summary>
    public bool IsOomKilled => _oomKilled;

    /// <summary>
    /// oom_badness: resident pages, swap entries and page-table pages, plus oom_score_adj thousandths of
    /// <paramref name="totalPages"/>; long.MinValue for an address space that may not be chosen.
    /// </summary>
    internal long OomBadness(long totalPages)
    {
        int adj = OomScoreAdj;
        if (adj == -1000 || _oomKilled || IsDisposed) return long.MinValue;
        long points = Interlocked.Read(ref _rssAnon) + Interlocked.Read(ref _rssFile) + Interlocked.Read(ref _rssShmem)
            + Interlocked.Read(ref _swapEnts) + PageTablePages;
        return points + adj * totalPages / 1000;
    }

    /// <summary>
    /// oom_kill_process and the oom reaper: marks the address space killed and unmaps every area (the tables stay
    /// until it is disposed), so its pages and swap slots go back. Returns the kernel's report line. When another
    /// thread holds the mmap_lock for writing, only the mark is set and false is returned in <paramref name="reaped"/>.
    /// </summary>
    internal string OomKill(out bool reaped)
    {
        string report = $"Out of memory: Killed process {Pid} ({Name}) total-vm:{VmSizeKb()}kB, anon-rss:{Interlocked.Read(ref _rssAnon) * 4}kB, " +
            $"file-rss:{Interlocked.Read(ref _rssFile) * 4}kB, shmem-rss:{Interlocked.Read(ref _rssShmem) * 4}kB, UID:0 pgtables:{PageTablePages * 4}kB oom_score_adj:{OomScoreAdj}";
        _oomKilled = true;
        // The victim may be the thread that ran out of memory, inside its own fault (mmap_lock held for reading).
        bool held = _mmapLock.IsReadLockHeld || _mmapLock.IsWriteLockHeld || _mmapLock.IsUpgradeableReadLockHeld;
        reaped = held || _mmapLock.TryEnterReadLock(TimeSpan.FromSeconds(1));
        if (!reaped) return report;
        try
        {
            var gather = new TlbGather();
            for (VmArea? v = _vmas.First; v != null; v = v.Next) ZapRange(v.Start, v.End, gather, v.File, freeTables: false);
            FinishGather(gather);
        }
        finally
        {
            if (!held) _mmapLock.ExitReadLock();
        }
        return report;
    }

    private long VmSizeKb()
    {
        long kb = 0;
        for (VmArea? v = _vmas.First; v != null; v = v.Next) kb += (long)(v.Length / 1024);
        return kb;
    }

    private void ThrowIfOomKilled()
    {
        if (_oomKilled) throw new ProcessKilledException(Pid, Name);
    }
}
