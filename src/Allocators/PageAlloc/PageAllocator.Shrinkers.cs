using System.Diagnostics;
using System.Diagnostics.Tracing;
using Allocators.Common;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    private Func<ShrinkControl, long>[] _shrinkers = [];
    private readonly Lock _shrinkerLock = new();
    [ThreadStatic] private static bool t_inShrinker;
    private const long ShrinkBatch = 128; // SHRINK_BATCH

    /// <summary>
    /// Registers a shrinker (register_shrinker): called when an allocation is about to fail so that caches above the
    /// page allocator give pages back. It gets a <see cref="ShrinkControl"/> — the allocation's gfp (a shrinker that
    /// would need I/O or the file system must not do it without <see cref="Gfp.Io"/>/<see cref="Gfp.Fs"/>), its node,
    /// and how many pages to try for — and returns the number of pages it freed. Shrinkers run on the allocating
    /// thread and must not allocate pages themselves.
    /// </summary>
    public void RegisterShrinker(Func<ShrinkControl, long> shrink)
    {
        lock (_shrinkerLock) _shrinkers = [.. _shrinkers, shrink];
    }

    /// <summary>Removes a shrinker added with <see cref="RegisterShrinker"/>.</summary>
    public void UnregisterShrinker(Func<ShrinkControl, long> shrink)
    {
        lock (_shrinkerLock) _shrinkers = Array.FindAll(_shrinkers, s => s != shrink);
    }

    /// <summary>
    /// Raised on the allocating thread after each run of the shrinkers (for an allocation about to fail, so often
    /// under memory pressure). Handlers run as the shrinkers do: they must not allocate pages of this allocator.
    /// </summary>
    public event Action<ShrinkerRun>? ShrinkersRan;

    private long RunShrinkers(Gfp gfp, int order, int node)
    {
        if (t_inShrinker) return 0;
        Func<ShrinkControl, long>[] shrinkers = _shrinkers;
        if (shrinkers.Length == 0) return 0;
        t_inShrinker = true;
        try
        {
            long start = Stopwatch.GetTimestamp();
            long freed = 0;
            // shrink_slab: SHRINK_BATCH (128) at a time, or the allocation's size when that is larger.
            var control = new ShrinkControl(gfp, node, Math.Max(ShrinkBatch, 1L << order));
            foreach (var shrink in shrinkers) freed += shrink(control);
            if (freed > 0) DrainAllPages();
            // Raised inside the shrinker context, so that a handler's own allocation failing does not shrink again.
            if (ShrinkersRan != null || AllocatorsEventSource.Log.IsEnabled(EventLevel.Verbose, AllocatorsEventSource.Keywords.Reclaim))
            {
                var run = new ShrinkerRun(order, shrinkers.Length, freed, Stopwatch.GetElapsedTime(start));
                ShrinkersRan?.Invoke(run);
                if (AllocatorsEventSource.Log.IsEnabled(EventLevel.Verbose, AllocatorsEventSource.Keywords.Reclaim))
                    AllocatorsEventSource.Log.ShrinkerRun(Id, run.Order, run.Shrinkers, run.PagesFreed, run.Elapsed.TotalMilliseconds);
            }
            return freed;
        }
        finally
        {
            t_inShrinker = false;
        }
    }
}
