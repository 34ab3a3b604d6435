namespace Allocators.Reclaim;

/// <summary>
/// One node's kswapd: a background thread that sleeps until <see cref="Wake"/> (a zone fell below its low
/// watermark), then reclaims until a zone its wakers may use is above its high watermark (the balance callback,
/// <see cref="Vmscan.BalanceNode"/>).
/// </summary>
/// <remarks>
/// An exception out of a balance run is a bug (the kernel's oops in a kthread): it is handed to the oops callback
/// once and the thread ends, as a kthread that oopses does; wake-ups do nothing from then on and allocations reclaim
/// directly. It never takes the process down.
/// </remarks>
internal sealed class Kswapd : IDisposable
{
    private readonly Action<int, PageAlloc.ZoneType> _balance;
    private readonly Action<int, Exception> _oops;
    private readonly int _node;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private volatile bool _stop;
    private volatile bool _busy;
    private volatile bool _dead;
    private long _highestZone = -1; // kswapd_highest_zoneidx: the highest zone a waker may use since the last run; -1 none

    /// <summary>True from a wake-up until the node is balanced again.</summary>
    public bool Busy => _busy;

    /// <summary>True once a balance run threw and the thread ended.</summary>
    public bool Dead => _dead;

    /// <param name="balance">One run's work for (node, highest zone a waker may use).</param>
    /// <param name="oops">Told (node, exception) when a run throws; must not throw.</param>
    /// <param name="node">The node this thread reclaims.</param>
    public Kswapd(Action<int, PageAlloc.ZoneType> balance, Action<int, Exception> oops, int node)
    {
        _balance = balance;
        _oops = oops;
        _node = node;
        _thread = new Thread(Run) { IsBackground = true, Name = $"kswapd{node}" };
        _thread.Start();
    }

    /// <summary>wakeup_kswapd: for an allocation that may use zones up to <paramref name="highestZone"/>.</summary>
    public void Wake(PageAlloc.ZoneType highestZone)
    {
        if (_dead) return;
        Threading.AtomicMax.Raise(ref _highestZone, (long)highestZone);
        _busy = true;
        _wake.Set();
    }

    private void Run()
    {
        try
        {
            while (true)
            {
                _wake.WaitOne();
                if (_stop) return;
                long highest = Interlocked.Exchange(ref _highestZone, -1);
                _balance(_node, highest < 0 ? PageAlloc.ZoneType.HighMem : (PageAlloc.ZoneType)highest);
                _busy = false;
            }
        }
        catch (Exception e)
        {
            _dead = true;
            _busy = false;
            _oops(_node, e);
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
