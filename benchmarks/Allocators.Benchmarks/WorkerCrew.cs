namespace Allocators.Benchmarks;

/// <summary>
/// Worker threads parked between benchmark invocations: <see cref="RunOnce"/> releases every worker to run its body once
/// and waits until all have finished, so thread start-up and teardown never land inside a measurement.
/// </summary>
internal sealed class WorkerCrew : IDisposable
{
    private readonly Barrier _start;
    private readonly Barrier _done;
    private readonly Thread[] _workers;
    private volatile bool _stopping;

    /// <summary>Starts <paramref name="count"/> parked threads named <paramref name="name"/>-N, each running <paramref name="body"/>(N) per round.</summary>
    public WorkerCrew(int count, string name, Action<int> body)
    {
        _start = new Barrier(count + 1);
        _done = new Barrier(count + 1);
        _workers = new Thread[count];
        for (int t = 0; t < count; t++)
        {
            int id = t;
            _workers[t] = new Thread(() =>
            {
                while (true)
                {
                    _start.SignalAndWait();
                    if (_stopping) return;
                    body(id);
                    _done.SignalAndWait();
                }
            }) { IsBackground = true, Name = $"{name}-{t}" };
            _workers[t].Start();
        }
    }

    /// <summary>One round: every worker runs its body once; returns when all are done.</summary>
    public void RunOnce()
    {
        _start.SignalAndWait();
        _done.SignalAndWait();
    }

    /// <summary>Stops and joins the workers.</summary>
    public void Dispose()
    {
        _stopping = true;
        _start.SignalAndWait();
        foreach (var w in _workers) w.Join();
        _start.Dispose();
        _done.Dispose();
    }
}
