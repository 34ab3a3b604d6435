using System.Diagnostics.Tracing;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Common.AllocatorsEventSource;
using static Allocators.Tests.Diagnostics.ReportTriggers;

namespace Allocators.Tests.Diagnostics;

/// <summary>
/// Tests that open a session of the process-wide <c>Allocators</c> event source, or need none open: alone, since a
/// session makes every system in the process format its reports.
/// </summary>
[CollectionDefinition(nameof(SerialEventSource), DisableParallelization = true)]
public sealed class SerialEventSource;

/// <summary>The <c>Allocators</c> event source: one event per report, written only while a session listens.</summary>
[Collection(nameof(SerialEventSource))]
public sealed unsafe class AllocatorsEventSourceTests
{
    private static MemorySystem NewSystem() => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
        PageAllocator = new PageAllocatorOptions { FreePageReportingDelay = TimeSpan.Zero, StallWarningInterval = TimeSpan.FromMilliseconds(50) },
        IdleTrimAfter = TimeSpan.FromHours(1),
    });

    [Fact]
    public void TheManifestIsValid()
    {
        string? manifest = EventSource.GenerateManifest(typeof(AllocatorsEventSource), typeof(AllocatorsEventSource).Assembly.Location,
            EventManifestOptions.Strict);
        Assert.NotNull(manifest);
        Assert.Null(Log.ConstructionException);
        Assert.Equal("Allocators", EventSource.GetName(typeof(AllocatorsEventSource)));
    }

    [Fact]
    public void FailureStallAndMisuseWriteWarningEvents()
    {
        using var events = new AllocatorsEventCollector();
        using var sys = NewSystem();
        int id = sys.Pages.Id;

        FailAllocation(sys);
        EventWrittenEventArgs failure = Assert.Single(events.Of(id, AllocationFailureId));
        Assert.Equal(EventLevel.Warning, failure.Level);
        Assert.Equal(Keywords.Pages, failure.Keywords & Keywords.Pages);
        Assert.Equal(PageAllocator.MaxOrder + 1, AllocatorsEventCollector.Payload<int>(failure, "order"));
        Assert.Equal((uint)Gfp.Kernel, AllocatorsEventCollector.Payload<uint>(failure, "gfpMask"));
        Assert.Equal("GFP_KERNEL", AllocatorsEventCollector.Payload<string>(failure, "gfpFlags"));
        Assert.StartsWith($"allocators: page allocation failure: order:11, mode:0x{(uint)Gfp.Kernel:x}(GFP_KERNEL)",
            AllocatorsEventCollector.Payload<string>(failure, "message"));

        Stall(sys);
        EventWrittenEventArgs stall = events.Of(id, AllocationStallId)[0];
        Assert.Equal(EventLevel.Warning, stall.Level);
        Assert.True(AllocatorsEventCollector.Payload<long>(stall, "elapsedMilliseconds") >= 50);
        Assert.Contains("page allocation stalls for", AllocatorsEventCollector.Payload<string>(stall, "message"));
        Assert.Contains("__GFP_NOFAIL", AllocatorsEventCollector.Payload<string>(stall, "gfpFlags"));

        WarnMisuse(sys);
        EventWrittenEventArgs misuse = Assert.Single(events.Of(id, PageAllocatorWarningId));
        Assert.Equal(EventLevel.Warning, misuse.Level);
        Assert.Contains("__GFP_NOFAIL with order 2 > 1", AllocatorsEventCollector.Payload<string>(misuse, "message"));
    }

    [Fact]
    public void ShrinkerRunsAndTrimsWriteReclaimEvents()
    {
        using var events = new AllocatorsEventCollector();
        using var sys = NewSystem();
        int id = sys.Pages.Id;

        RunShrinkers(sys);
        EventWrittenEventArgs run = events.Of(id, ShrinkerRunId)[0];
        Assert.Equal(EventLevel.Verbose, run.Level);
        Assert.Equal(Keywords.Reclaim, run.Keywords & Keywords.Reclaim);
        Assert.True(AllocatorsEventCollector.Payload<int>(run, "shrinkers") >= 1, "the slab layer's shrinker is registered");

        long released = sys.Trimmer!.TrimNow();
        EventWrittenEventArgs trim = Assert.Single(events.Of(id, TrimId));
        Assert.Equal(EventLevel.Informational, trim.Level);
        Assert.Equal(released, AllocatorsEventCollector.Payload<long>(trim, "pagesReleased"));
        Assert.False(AllocatorsEventCollector.Payload<bool>(trim, "idle"));
    }

    [Fact]
    public void SlabCorruptionWritesAnErrorEvent()
    {
        using var events = new AllocatorsEventCollector();
        using var sys = NewSystem();

        string cache = CorruptRedZone(sys);
        EventWrittenEventArgs report = Assert.Single(events.Of(sys.Pages.Id, SlabCorruptionId));
        Assert.Equal(EventLevel.Error, report.Level);
        Assert.Equal(Keywords.Slab, report.Keywords & Keywords.Slab);
        Assert.Equal(cache, AllocatorsEventCollector.Payload<string>(report, "cache"));
        Assert.Equal("Right Redzone overwritten", AllocatorsEventCollector.Payload<string>(report, "problem"));
        Assert.Contains($"BUG {cache}: Right Redzone overwritten", AllocatorsEventCollector.Payload<string>(report, "report"));
    }

    [Fact]
    public void RefusedMisuseWritesAnErrorEventPerCall()
    {
        using var events = new AllocatorsEventCollector();
        using var sys = NewSystem();
        int id = sys.Pages.Id;

        MemoryCorruptionException doubleFree = DoubleFree(sys, out nuint address);
        EventWrittenEventArgs slab = Assert.Single(events.Of(id, MemoryMisuseId));
        Assert.Equal(EventLevel.Error, slab.Level);
        Assert.Equal(Keywords.Misuse, slab.Keywords & Keywords.Misuse);
        Assert.Equal(nameof(MemoryCorruptionException), AllocatorsEventCollector.Payload<string>(slab, "exception"));
        Assert.Equal((ulong)address, AllocatorsEventCollector.Payload<ulong>(slab, "address"));
        Assert.Equal(ulong.MaxValue, AllocatorsEventCollector.Payload<ulong>(slab, "pfn"));
        Assert.Equal(doubleFree.Message, AllocatorsEventCollector.Payload<string>(slab, "message"));
        Assert.Contains("double free", doubleFree.Message);

        BadPageException badPage = DoublePageFree(sys);
        EventWrittenEventArgs page = events.Of(id, MemoryMisuseId)[1];
        Assert.Equal(nameof(BadPageException), AllocatorsEventCollector.Payload<string>(page, "exception"));
        Assert.Equal(badPage.Pfn, AllocatorsEventCollector.Payload<ulong>(page, "pfn"));
        Assert.Equal(badPage.Message, AllocatorsEventCollector.Payload<string>(page, "message"));
        Assert.Contains("double free: ", badPage.Message); // on a per-thread list, or with KASAN in its quarantine
    }

    [Fact]
    public void ASessionForOneLevelGetsNothingBelowIt()
    {
        using var events = new AllocatorsEventCollector(EventLevel.Error);
        using var sys = NewSystem();
        FailAllocation(sys);
        RunShrinkers(sys);
        CorruptRedZone(sys);
        DoubleFree(sys, out _);
        Assert.All(events.All, e => Assert.Equal(EventLevel.Error, e.Level));
        Assert.Single(events.Of(sys.Pages.Id, SlabCorruptionId));
        Assert.Single(events.Of(sys.Pages.Id, MemoryMisuseId));
    }

    /// <summary>
    /// With no session, no Warn channel and no handler, a failure is counted but not formatted: a burst of failures
    /// under memory pressure allocates nothing.
    /// </summary>
    [Fact]
    public void WithNobodyListeningAFailureFormatsNothing()
    {
        Assert.False(Log.IsEnabled(), "an event session is open: this test must run alone");
        using var sys = NewSystem();
        FailAllocation(sys);
        long warnings = sys.Pages.Warnings;
        int failed = 0;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
            if (sys.Pages.AllocPages(Gfp.Kernel, PageAllocator.MaxOrder + 1) == null) failed++;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(100, failed);
        Assert.Equal(0, allocated);
        Assert.Equal(warnings + 100, sys.Pages.Warnings);
    }
}
