using System.Diagnostics.Tracing;

namespace Allocators.Common;

/// <summary>
/// The <c>Allocators</c> event source (EventPipe, ETW, LTTng, in-process <see cref="EventListener"/>s): page allocation
/// failures, stalls and misuse warnings, shrinker runs, trims, slab corruption reports and refused misuse (double
/// free, bad pointer: each <see cref="MemoryCorruptionException"/> thrown), each with the system's id (the page
/// allocator's <c>Id</c>, the <c>allocators.system</c> metric attribute). It sits in the leaf namespace so that every
/// layer can write to it; its events take only primitive payloads. Every event comes from a slow path, and callers
/// test <see cref="EventSource.IsEnabled(EventLevel, EventKeywords)"/> before they format anything, so a process
/// nobody traces pays one field test per report.
/// <c>dotnet-trace collect --providers Allocators -p &lt;pid&gt;</c> records them.
/// </summary>
[EventSource(Name = SourceName)]
internal sealed class AllocatorsEventSource : EventSource
{
    /// <summary>The source's name, for listeners and trace providers.</summary>
    public const string SourceName = "Allocators";

    /// <summary>The one instance.</summary>
    public static readonly AllocatorsEventSource Log = new();

    /// <summary>Keywords: one per layer, so a session can take just one.</summary>
    public static class Keywords
    {
        /// <summary>The page allocator: failures, stalls, misuse warnings.</summary>
        public const EventKeywords Pages = (EventKeywords)1;

        /// <summary>The slab layer: corruption reports.</summary>
        public const EventKeywords Slab = (EventKeywords)2;

        /// <summary>Reclaim: shrinker runs and trims.</summary>
        public const EventKeywords Reclaim = (EventKeywords)4;

        /// <summary>Misuse refused by any layer (double free, foreign or interior pointer, wrong order or cache).</summary>
        public const EventKeywords Misuse = (EventKeywords)8;
    }

    /// <summary>Event ids; a listener may rely on them.</summary>
    public const int AllocationFailureId = 1, AllocationStallId = 2, PageAllocatorWarningId = 3, ShrinkerRunId = 4, TrimId = 5,
        SlabCorruptionId = 6, MemoryMisuseId = 7;

    private AllocatorsEventSource() { }

    /// <summary>Writes the event for <paramref name="misuse"/> in system <paramref name="systemId"/>, if anyone listens.</summary>
    [NonEvent]
    public void MisuseFound(int systemId, MemoryCorruptionException misuse)
    {
        if (IsEnabled(EventLevel.Error, Keywords.Misuse))
            MemoryMisuse(systemId, misuse.GetType().Name, misuse.Address, misuse is BadPageException bad ? bad.Pfn : ulong.MaxValue, misuse.Message);
    }

    /// <summary>A page allocation failed and was reported (it did not have <c>Gfp.NoWarn</c>).</summary>
    [Event(AllocationFailureId, Level = EventLevel.Warning, Keywords = Keywords.Pages, Message = "{4}")]
    public void AllocationFailure(int systemId, int order, uint gfpMask, string gfpFlags, string message)
        => WriteEvent(AllocationFailureId, systemId, order, gfpMask, gfpFlags, message);

    /// <summary>A <c>Gfp.NoFail</c> page allocation has waited another stall interval.</summary>
    [Event(AllocationStallId, Level = EventLevel.Warning, Keywords = Keywords.Pages, Message = "{5}")]
    public void AllocationStall(int systemId, int order, uint gfpMask, string gfpFlags, long elapsedMilliseconds, string message)
        => WriteEvent(AllocationStallId, systemId, order, gfpMask, gfpFlags, elapsedMilliseconds, message);

    /// <summary>Any other page allocator warning (misuse, WARN_ON_ONCE).</summary>
    [Event(PageAllocatorWarningId, Level = EventLevel.Warning, Keywords = Keywords.Pages, Message = "{3}")]
    public void PageAllocatorWarning(int systemId, int order, uint gfpMask, string message)
        => WriteEvent(PageAllocatorWarningId, systemId, order, gfpMask, message);

    /// <summary>The shrinkers ran for a page allocation about to fail.</summary>
    [Event(ShrinkerRunId, Level = EventLevel.Verbose, Keywords = Keywords.Reclaim,
        Message = "system {0}: {2} shrinkers freed {3} pages for an order-{1} allocation in {4} ms")]
    public void ShrinkerRun(int systemId, int order, int shrinkers, long pagesFreed, double elapsedMilliseconds)
        => WriteEvent(ShrinkerRunId, systemId, order, shrinkers, pagesFreed, elapsedMilliseconds);

    /// <summary>Cached and free memory was given back (idle trim, or an explicit <c>IdleTrimmer.TrimNow</c>).</summary>
    [Event(TrimId, Level = EventLevel.Informational, Keywords = Keywords.Reclaim,
        Message = "system {0}: trim released {1} pages (idle: {2}) in {3} ms")]
    public void Trim(int systemId, long pagesReleased, bool idle, double elapsedMilliseconds)
        => WriteEvent(TrimId, systemId, pagesReleased, idle, elapsedMilliseconds);

    /// <summary>A slab cache found corruption (red zone, poison, object state) or leaked objects.</summary>
    [Event(SlabCorruptionId, Level = EventLevel.Error, Keywords = Keywords.Slab, Message = "{4}")]
    public void SlabCorruption(int systemId, string cache, string problem, ulong address, string report)
        => WriteEvent(SlabCorruptionId, systemId, cache, problem, address, report);

    /// <summary>
    /// A call was refused as misuse or corruption (<paramref name="exception"/> names the
    /// <see cref="MemoryCorruptionException"/> type thrown); <paramref name="pfn"/> is <see cref="ulong.MaxValue"/> when
    /// no page frame is involved.
    /// </summary>
    [Event(MemoryMisuseId, Level = EventLevel.Error, Keywords = Keywords.Misuse, Message = "{4}")]
    public void MemoryMisuse(int systemId, string exception, ulong address, ulong pfn, string message)
        => WriteEvent(MemoryMisuseId, systemId, exception, address, pfn, message);
}
