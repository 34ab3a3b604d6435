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
    /// oom_kill_process: marks the address space killed and reaps it (<see cref="TryReap"/>) when that can be done now;
    /// <paramref name="reaped"/> says whether it was. Returns the kernel's report line.
    /// </summary>
    internal string OomKill(out bool reaped)
    {
        string report = $"Out of memory: Killed process {Pid} ({Name}) total-vm:{VmSizeKb()}kB, anon-rss:{Interlocked.Read(ref _rssAnon) * 4}kB, " +
            $"file-rss:{Interlocked.Read(ref _rssFile) * 4}kB, shmem-rss:{Interlocked.Read(ref _rssShmem) * 4}kB, UID:0 pgtables:{PageTablePages * 4}kB oom_score_adj:{OomScoreAdj}";
        _oomKilled = true;
        reaped = TryReap();
        return report;
    }

    /// <summary>True once the reaper has taken a killed address space's memory.</summary>
    internal bool OomReaped => _oomReaped;

    private volatile bool _oomReaped;

    /// <summary>
    /// The oom reaper: unmaps every area of a killed address space (the tables stay until it is disposed). The victim
    /// may be the thread that ran out of memory: inside its own fault (the mmap_lock held for reading, no table lock)
    /// its areas can go now; in the middle of fork, mmap or munmap (the lock held for writing, a walk of its tables
    /// under way) they cannot, and a later allocation reaps it. False when it could not be done now.
    /// </summary>
    internal bool TryReap()
    {
        if (_oomReaped) return true;
        if (_mmapLock.IsWriteLockHeld || _mmapLock.IsUpgradeableReadLockHeld || _ptl.IsHeldByCurrentThread || _immapLock.IsHeldByCurrentThread)
            return false;
        bool held = _mmapLock.IsReadLockHeld;
        try
        {
            // No waiting: the holder may be waiting for memory itself, or disposing the address space.
            if (!held && !_mmapLock.TryEnterReadLock(0)) return false;
        }
        catch (ObjectDisposedException)
        {
            return true; // exited: its memory went with it
        }
        try
        {
            if (_oomReaped || IsDisposed) return true;
            var gather = new TlbGather();
            for (VmArea? v = _vmas.First; v != null; v = v.Next) ZapRange(v.Start, v.End, gather, v.File, freeTables: false);
            FinishGather(gather);
            _oomReaped = true;
            return true;
        }
        finally
        {
            if (!held) _mmapLock.ExitReadLock();
        }
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
