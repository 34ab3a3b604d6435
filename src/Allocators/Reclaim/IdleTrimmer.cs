using System.Diagnostics;
using System.Diagnostics.Tracing;
using Allocators.Common;
using Allocators.PageAlloc;
using Allocators.Slab;

namespace Allocators.Reclaim;

/// <summary>
/// Gives memory that nobody used for a while back: when no page was allocated or freed for <see cref="IdleTime"/>,
/// every cache (threads' slabs, per-thread page lists) is drained to the page allocator and free
/// max-order blocks go back to the OS. A timer polls cheap counters; the hot paths are not touched.
/// </summary>
public sealed class IdleTrimmer : IDisposable
{
    private readonly PageAllocator _pages;
    private readonly SlabAllocator? _slab;
    private readonly Timer _timer;
    private long _lastActivity = -1;
    private long _idleSinceTicks = Environment.TickCount64;
    private long _trims;
    private long _pagesReleased;
    private int _running;

    /// <summary>Starts trimming <paramref name="pages"/> (and <paramref name="slab"/>) after <paramref name="idleTime"/> without activity.</summary>
    public IdleTrimmer(PageAllocator pages, SlabAllocator? slab, TimeSpan idleTime)
    {
        ArgumentNullException.ThrowIfNull(pages);
        if (idleTime <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(idleTime));
        _pages = pages;
        _slab = slab;
        IdleTime = idleTime;
        var period = TimeSpan.FromMilliseconds(Math.Max(10, idleTime.TotalMilliseconds / 4));
        _timer = new Timer(_ => Tick(), null, period, period);
    }

    /// <summary>How long memory must sit unused before it is given back.</summary>
    public TimeSpan IdleTime { get; }

    /// <summary>Times the trimmer found the system idle and trimmed it.</summary>
    public long Trims => Interlocked.Read(ref _trims);

    /// <summary>Pages given back to the OS by trimming.</summary>
    public long PagesReleased => Interlocked.Read(ref _pagesReleased);

    /// <summary>
    /// Raised after every trim, on the trimming thread (the timer's, or the caller of <see cref="TrimNow"/>). A handler
    /// that throws on the timer's thread ends the process, as any timer callback's exception does.
    /// </summary>
    public event Action<TrimResult>? Trimmed;

    /// <summary>Trims now, whatever the activity (drop_caches).</summary>
    /// <returns>The pages given back to the OS.</returns>
    public long TrimNow() => Trim(idle: false);

    private long Trim(bool idle)
    {
        long start = Stopwatch.GetTimestamp();
        _slab?.ShrinkAll();
        _pages.DrainAllPages();
        long released = _pages.ReleaseFreeMemory();
        Interlocked.Add(ref _pagesReleased, released);
        Interlocked.Increment(ref _trims);
        var trim = new TrimResult(released, idle, Stopwatch.GetElapsedTime(start));
        Trimmed?.Invoke(trim);
        if (AllocatorsEventSource.Log.IsEnabled(EventLevel.Informational, AllocatorsEventSource.Keywords.Reclaim))
            AllocatorsEventSource.Log.Trim(_pages.Id, trim.PagesReleased, trim.Idle, trim.Elapsed.TotalMilliseconds);
        return released;
    }

    private void Tick()
    {
        if (Interlocked.Exchange(ref _running, 1) != 0) return;
        try
        {
            long activity = _pages.PagesAllocated + _pages.PagesFreed;
            long now = Environment.TickCount64;
            if (activity != _lastActivity)
            {
                _lastActivity = activity;
                _idleSinceTicks = now;
                return;
            }
            if (now - _idleSinceTicks < IdleTime.TotalMilliseconds) return;
            Trim(idle: true);
            // Trimming itself frees pages: remember the new count so the next tick does not see "activity".
            _lastActivity = _pages.PagesAllocated + _pages.PagesFreed;
            _idleSinceTicks = long.MaxValue / 2;
        }
        catch (ObjectDisposedException)
        {
            // The system went away between ticks.
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    /// <summary>Stops the timer.</summary>
    public void Dispose() => _timer.Dispose();
}
