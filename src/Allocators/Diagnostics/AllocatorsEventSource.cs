using System.Diagnostics.Tracing;
using Allocators.PageAlloc;
using Allocators.Reclaim;
using Allocators.Slab;

namespace Allocators.Diagnostics;

/// <summary>
/// The <c>Allocators</c> event source (EventPipe, ETW, LTTng, in-process <see cref="EventListener"/>s): page allocation
/// failures, stalls and misuse warnings, shrinker runs, trims, slab corruption reports and refused misuse (double
/// free, bad pointer: each <see cref="MemoryCorruptionException"/> thrown), each with the system's id
/// (<see cref="PageAllocator.Id"/>, the <c>allocators.system</c> metric attribute). Every event comes from a slow path,
/// and the <see cref="NonEventAttribute"/> entry points test <see cref="EventSource.IsEnabled(EventLevel, EventKeywords)"/>
/// before they format anything, so a process nobody traces pays one field test per report.
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

    /// <summary>Writes the event for <paramref name="warning"/> of system <paramref name="systemId"/>, if anyone listens.</summary>
    [NonEvent]
    public void PageWarning(int systemId, PageAllocatorWarning warning, TimeSpan stalledFor)
    {
        if (!IsEnabled(EventLevel.Warning, Keywords.Pages)) return;
        switch (warning.Kind)
        {
            case PageAllocatorWarningKind.AllocationFailure:
                AllocationFailure(systemId, warning.Order, (uint)warning.Gfp, warning.Gfp.Describe(), warning.Text);
                break;
            case PageAllocatorWarningKind.AllocationStall:
                AllocationStall(systemId, warning.Order, (uint)warning.Gfp, warning.Gfp.Describe(), (long)stalledFor.TotalMilliseconds, warning.Text);
                break;
            default:
                PageAllocatorWarning(systemId, warning.Order, (uint)warning.Gfp, warning.Text);
                break;
        }
    }

    /// <summary>Writes the event for <paramref name="run"/> of system <paramref name="systemId"/>, if anyone listens.</summary>
    [NonEvent]
    public void Shrunk(int systemId, ShrinkerRun run)
    {
        if (IsEnabled(EventLevel.Verbose, Keywords.Reclaim))
            ShrinkerRun(systemId, run.Order, run.Shrinkers, run.PagesFreed, run.Elapsed.TotalMilliseconds);
    }

    /// <summary>Writes the event for <paramref name="trim"/> of system <paramref name="systemId"/>, if anyone listens.</summary>
    [NonEvent]
    public void Trimmed(int systemId, TrimResult trim)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Reclaim))
            Trim(systemId, trim.PagesReleased, trim.Idle, trim.Elapsed.TotalMilliseconds);
    }

    /// <summary>Writes the event for <paramref name="report"/> of system <paramref name="systemId"/>, if anyone listens.</summary>
    [NonEvent]
    public void CorruptionFound(int systemId, SlabReport report)
    {
        if (IsEnabled(EventLevel.Error, Keywords.Slab))
            SlabCorruption(systemId, report.Cache, report.Problem, report.Address, report.Text);
    }

    /// <summary>Writes the event for <paramref name="misuse"/> in system <paramref name="systemId"/>, if anyone listens.</summary>
    [NonEvent]
    public void MisuseFound(int systemId, MemoryCorruptionException misuse)
    {
        if (IsEnabled(EventLevel.Error, Keywords.Misuse))
            MemoryMisuse(systemId, misuse.GetType().Name, misuse.Address, misuse is BadPageException bad ? bad.Pfn : ulong.MaxValue, misuse.Message);
    }

    /// <summary>A page allocation failed and was reported (it did not have <see cref="Gfp.NoWarn"/>).</summary>
    [Event(AllocationFailureId, Level = EventLevel.Warning, Keywords = Keywords.Pages, Message = "{4}")]
    public void AllocationFailure(int systemId, int order, uint gfpMask, string gfpFlags, string message)
        => WriteEvent(AllocationFailureId, systemId, order, gfpMask, gfpFlags, message);

    /// <summary>A <see cref="Gfp.NoFail"/> page allocation has waited another stall interval.</summary>
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

    /// <summary>Cached and free memory was given back (idle trim, or an explicit <see cref="IdleTrimmer.TrimNow"/>).</summary>
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
