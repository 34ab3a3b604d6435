using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Reclaim;
using Allocators.Slab;
using Microsoft.Extensions.Logging;

namespace Allocators.AspNetCore;

/// <summary>
/// Writes a <see cref="MemorySystem"/>'s reports to <see cref="ILogger"/>s, one category per layer
/// (<c>Allocators.PageAlloc.PageAllocator</c>, <c>Allocators.Slab.SlabAllocator</c>, <c>Allocators.Reclaim.IdleTrimmer</c>,
/// <c>Allocators.MemorySystem</c>, and <c>Allocators.Common.MemoryCorruptionException</c> for misuse refused by any
/// layer): failures, stalls and risky requests as warnings, corruption and refused misuse (double free, bad pointer) as
/// errors, trims as information, shrinker runs and the system's creation as debug. Event ids 1..7 are the
/// <c>Allocators</c> event source's.
/// The generated methods test <see cref="ILogger.IsEnabled"/> before they format anything.
/// </summary>
internal static partial class MemorySystemLogging
{
    /// <summary>Subscribes loggers from <paramref name="loggers"/> to the reports of <paramref name="system"/>.</summary>
    public static void Attach(MemorySystem system, ILoggerFactory loggers)
    {
        int id = system.Pages.Id;
        ILogger pages = loggers.CreateLogger<PageAllocator>();
        ILogger slab = loggers.CreateLogger<SlabAllocator>();
        system.Pages.Warned += warning => PageWarning(pages, id, warning);
        system.Pages.ShrinkersRan += run => ShrinkerRun(pages, id, run.Shrinkers, run.PagesFreed, run.Order, run.Elapsed.TotalMilliseconds);
        ILogger misuse = loggers.CreateLogger<MemoryCorruptionException>();
        system.Pages.MisuseDetected += e => MemoryMisuse(misuse, id, e.Message, e.GetType().Name, (ulong)e.Address);
        system.Slab.CorruptionDetected += report => SlabCorruption(slab, id, report.Cache, report.Problem, (ulong)report.Address, report.Text);
        if (system.Trimmer is { } trimmer)
        {
            ILogger trims = loggers.CreateLogger<IdleTrimmer>();
            trimmer.Trimmed += trim => Trim(trims, id, trim.PagesReleased, trim.Idle, trim.Elapsed.TotalMilliseconds);
        }
        var physical = system.Options.Physical;
        Created(loggers.CreateLogger<MemorySystem>(), id, physical.Size >> 20, physical.Backing, physical.Model, physical.Nodes);
    }

    private static void PageWarning(ILogger logger, int systemId, PageAllocatorWarning warning)
    {
        switch (warning.Kind)
        {
            case PageAllocatorWarningKind.AllocationFailure: AllocationFailure(logger, systemId, warning.Text); break;
            case PageAllocatorWarningKind.AllocationStall: AllocationStall(logger, systemId, warning.Text); break;
            default: Misuse(logger, systemId, warning.Text); break;
        }
    }

    [LoggerMessage(EventId = 1, EventName = "AllocationFailure", Level = LogLevel.Warning, Message = "System {SystemId}: {Warning}")]
    private static partial void AllocationFailure(ILogger logger, int systemId, string warning);

    [LoggerMessage(EventId = 2, EventName = "AllocationStall", Level = LogLevel.Warning, Message = "System {SystemId}: {Warning}")]
    private static partial void AllocationStall(ILogger logger, int systemId, string warning);

    [LoggerMessage(EventId = 3, EventName = "PageAllocatorWarning", Level = LogLevel.Warning, Message = "System {SystemId}: {Warning}")]
    private static partial void Misuse(ILogger logger, int systemId, string warning);

    [LoggerMessage(EventId = 4, EventName = "ShrinkerRun", Level = LogLevel.Debug,
        Message = "System {SystemId}: {Shrinkers} shrinkers freed {PagesFreed} pages for an order-{Order} allocation in {ElapsedMilliseconds} ms")]
    private static partial void ShrinkerRun(ILogger logger, int systemId, int shrinkers, long pagesFreed, int order, double elapsedMilliseconds);

    [LoggerMessage(EventId = 5, EventName = "Trim", Level = LogLevel.Information,
        Message = "System {SystemId}: trim released {PagesReleased} pages (idle: {Idle}) in {ElapsedMilliseconds} ms")]
    private static partial void Trim(ILogger logger, int systemId, long pagesReleased, bool idle, double elapsedMilliseconds);

    [LoggerMessage(EventId = 6, EventName = "SlabCorruption", Level = LogLevel.Error,
        Message = "System {SystemId}: slab cache {Cache}: {Problem} at 0x{Address:x}\n{Report}")]
    private static partial void SlabCorruption(ILogger logger, int systemId, string cache, string problem, ulong address, string report);

    [LoggerMessage(EventId = 7, EventName = "MemoryMisuse", Level = LogLevel.Error,
        Message = "System {SystemId}: {Report} ({Exception} at 0x{Address:x})")]
    private static partial void MemoryMisuse(ILogger logger, int systemId, string report, string exception, ulong address);

    [LoggerMessage(EventId = 100, EventName = "Created", Level = LogLevel.Debug,
        Message = "System {SystemId}: {ArenaMiB} MiB arena ({Backing}, {Model}), {Nodes} nodes")]
    private static partial void Created(ILogger logger, int systemId, long arenaMiB, ArenaBacking backing, MemoryModel model, int nodes);
}
