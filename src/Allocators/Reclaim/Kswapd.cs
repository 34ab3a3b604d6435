namespace Allocators.Reclaim;

/// <summary>
/// One node's kswapd: a background thread that sleeps until <see cref="Wake"/> (a zone fell below its low
/// watermark), then reclaims until a zone its wakers may use is above its high watermark (<see cref="Vmscan.BalanceNode"/>).
/// </summary>
internal sealed class Kswapd : IDisposable
{
    private readonly Vmscan _vmscan;
    private readonly int _node;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private volatile bool _stop;
    private volatile bool _busy;
    private long _highestZone = -1; // kswapd_highest_zoneidx: the highest zone a waker may use since the last run; -1 none

    /// <summary>True from a wake-up until the node is balanced again.</summary>
    public bool Busy => _busy;

    public Kswapd(Vmscan vmscan, int node)
    {
        _vmscan = vmscan;
        _node = node;
        _thread = new Thread(Run) { IsBackground = true, Name = $"kswapd{node}" };
        _thread.Start();
    }

    /// <summary>wakeup_kswapd: for an allocation that may use zones up to <paramref name="highestZone"/>.</summary>
    public void Wake(PageAlloc.ZoneType highestZone)
    {
        Threading.AtomicMax.Raise(ref _highestZone, (long)highestZone);
        _busy = true;
        _wake.Set();
    }

    private void Run()
    {
        while (true)
        {
            _wake.WaitOne();
            if (_stop) return;
            Interlocked.Increment(ref _vmscan.Counters.KswapdWakeups);
            long highest = Interlocked.Exchange(ref _highestZone, -1);
            _vmscan.BalanceNode(_node, highest < 0 ? PageAlloc.ZoneType.HighMem : (PageAlloc.ZoneType)highest);
            _busy = false;
        }
    }

    /// <summary>Stops the thread and waits for it.</summary>
    public void Dispose()
    {
        _stop = true;
        _wake.Set();
        _thread.Join();
        _wake.Dispose();
    }
}
