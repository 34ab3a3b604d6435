namespace Allocators.PageAlloc;

/// <summary>
/// Fault injection like the kernel's <c>fail_page_alloc</c> / <c>failslab</c> (struct fault_attr): makes
/// allocations fail on purpose so that callers' failure paths can be tested. Disabled until
/// <see cref="Probability"/> or <see cref="FailNth"/> is set above zero. Thread-safe.
/// </summary>
public sealed class FaultAttributes
{
    private readonly Lock _lock = new();
    private Random _random = new(12345);
    private long _count;
    private volatile bool _enabled;
    private int _probability;
    private int _times = -1;
    private int _failNth;

    /// <summary>Percent chance (0..100) that an eligible call fails. 0 disables injection.</summary>
    public int Probability
    {
        get => _probability;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 0);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 100);
            lock (_lock)
            {
                _probability = value;
                _enabled = ShouldBeEnabled();
            }
            Changed?.Invoke();
        }
    }

    /// <summary>Only every Interval-th eligible call may fail (1 = every call).</summary>
    public int Interval { get; set; } = 1;

    /// <summary>How many failures to inject in total; -1 for no limit.</summary>
    public int Times
    {
        get => _times;
        set
        {
            lock (_lock)
            {
                _times = value;
                _enabled = ShouldBeEnabled();
            }
            Changed?.Invoke();
        }
    }

    /// <summary>
    /// Fails the Nth eligible call from now, once, whatever the other settings say (the kernel's fail-nth, written to
    /// /proc/thread-self/fail-nth; here it belongs to this set of attributes and counts the calls of every thread).
    /// Reads back 0 once that failure has been injected, else how many eligible calls are still to come before it: a
    /// caller that steps N up from 1 until an operation leaves it above 0 has failed each of the operation's
    /// allocations in turn. Setting 0 turns it off.
    /// </summary>
    public int FailNth
    {
        get { lock (_lock) return _failNth; }
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            lock (_lock)
            {
                _failNth = value;
                _enabled = ShouldBeEnabled();
            }
            Changed?.Invoke();
        }
    }

    /// <summary>Bytes of allocations to let through before failures start.</summary>
    public long Space { get; set; }

    /// <summary>Only allocations of at least this order may fail (page allocator only).</summary>
    public int MinOrder { get; set; }

    /// <summary>Do not fail allocations that may sleep (ignore-gfp-wait).</summary>
    public bool IgnoreGfpWait { get; set; }

    /// <summary>Failures injected so far.</summary>
    public long Injected => Interlocked.Read(ref _injected);
    private long _injected;

    /// <summary>Seeds the random source so a test run is repeatable.</summary>
    public void Seed(int seed) { lock (_lock) _random = new Random(seed); }

    internal bool Enabled => _enabled;

    /// <summary>Raised after <see cref="Enabled"/> may have changed (layers that cache it on their fast paths refresh it).</summary>
    internal event Action? Changed;


    internal bool ShouldFail(long size, int order, Gfp gfp)
    {
        if ((gfp & Gfp.NoFail) != 0 || order < MinOrder) return false;
        if (IgnoreGfpWait && gfp.AllowsBlocking()) return false;
        bool changed;
        lock (_lock)
        {
            if (_failNth > 0)
            {
                if (--_failNth != 0) return false;
            }
            else
            {
                if (_times == 0) return false;
                if (Space > size) { Space -= size; return false; }
                if (Interval > 1 && ++_count % Interval != 0) return false;
                if (_probability <= _random.Next(100)) return false;
                if (_times > 0) _times--;
            }
            _injected++;
            bool enabled = ShouldBeEnabled();
            changed = enabled != _enabled;
            _enabled = enabled;
        }
        if (changed) Changed?.Invoke();
        return true;
    }

    /// <summary>Whether any failure may still come. Under the lock.</summary>
    private bool ShouldBeEnabled() => (_probability > 0 && _times != 0) || _failNth > 0;
}
