using Allocators.AspNetCore;
using Allocators.PageAlloc;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using static Allocators.Tests.Diagnostics.ReportTriggers;

namespace Allocators.Tests.Hosting;

/// <summary>The registered system's reports in the host's loggers: one category per layer, levels by severity.</summary>
public sealed class AllocatorsLoggingTests
{
    private const string PageCategory = "Allocators.PageAlloc.PageAllocator";

    /// <summary>A host whose system is 16 MiB with a 50 ms stall interval and a trimmer, logging from <paramref name="minimum"/> up.</summary>
    private static (IHost Host, MemorySystem System, TestLoggerProvider Log) Start(LogLevel minimum)
    {
        var builder = AddAllocatorsTests.NewHostBuilder(new());
        var log = new TestLoggerProvider();
        builder.Logging.AddProvider(log).SetMinimumLevel(minimum);
        builder.Services.AddAllocators(o =>
        {
            o.ArenaSizeMiB = 16;
            o.FreePageReportingDelay = TimeSpan.Zero;
            o.StallWarningInterval = TimeSpan.FromMilliseconds(50);
            o.IdleTrimAfter = TimeSpan.FromHours(1);
        });
        IHost host = builder.Build();
        return (host, host.Services.GetRequiredService<MemorySystem>(), log);
    }

    private static LogEntry Only(TestLoggerProvider log, string eventName)
        => Assert.Single(log.Allocators, e => e.EventId.Name == eventName);

    [Fact]
    public void FailuresStallsAndMisuseAreWarningsOfThePageAllocator()
    {
        var (host, sys, log) = Start(LogLevel.Information);
        using var _ = host;

        FailAllocation(sys);
        LogEntry failure = Only(log, "AllocationFailure");
        Assert.Equal((PageCategory, LogLevel.Warning, 1), (failure.Category, failure.Level, failure.EventId.Id));
        Assert.Equal($"System {sys.Pages.Id}: allocators: page allocation failure: order:11, mode:0x{(uint)Gfp.Kernel:x}(GFP_KERNEL), nodemask=(null) "
            + "[order 11 exceeds MAX_PAGE_ORDER 10]", failure.Message);

        Stall(sys);
        LogEntry stall = log.Allocators.First(e => e.EventId.Name == "AllocationStall");
        Assert.Equal((PageCategory, LogLevel.Warning, 2), (stall.Category, stall.Level, stall.EventId.Id));
        Assert.Matches(@"^System \d+: allocators: page allocation stalls for \d+ms, order:0, mode:0x[0-9a-f]+\(GFP_KERNEL\|__GFP_NOFAIL\)", stall.Message);

        WarnMisuse(sys);
        LogEntry misuse = Only(log, "PageAllocatorWarning");
        Assert.Equal((PageCategory, LogLevel.Warning, 3), (misuse.Category, misuse.Level, misuse.EventId.Id));
        Assert.Contains("__GFP_NOFAIL with order 2 > 1", misuse.Message);
    }

    [Fact]
    public void CorruptionIsAnErrorOfTheSlabLayer()
    {
        var (host, sys, log) = Start(LogLevel.Information);
        using var _ = host;

        string cache = CorruptRedZone(sys);
        LogEntry report = Only(log, "SlabCorruption");
        Assert.Equal(("Allocators.Slab.SlabAllocator", LogLevel.Error, 6), (report.Category, report.Level, report.EventId.Id));
        Assert.StartsWith($"System {sys.Pages.Id}: slab cache {cache}: Right Redzone overwritten at 0x", report.Message);
        Assert.Contains($"BUG {cache}: Right Redzone overwritten", report.Message);
        Assert.Contains($"FIX {cache}: Restoring Right Redzone", report.Message);
    }

    [Fact]
    public void RefusedMisuseIsAnErrorOfItsOwnCategory()
    {
        var (host, sys, log) = Start(LogLevel.Information);
        using var _ = host;

        var e = DoubleFree(sys, out nuint address);
        LogEntry entry = Only(log, "MemoryMisuse");
        Assert.Equal(("Allocators.Common.MemoryCorruptionException", LogLevel.Error, 7), (entry.Category, entry.Level, entry.EventId.Id));
        Assert.Equal($"System {sys.Pages.Id}: {e.Message} (MemoryCorruptionException at 0x{address:x})", entry.Message);

        DoublePageFree(sys);
        Assert.Contains(log.Allocators, x => x.EventId.Name == "MemoryMisuse" && x.Message.Contains("(BadPageException at 0x"));
    }

    [Fact]
    public void TrimsAreInformationAndShrinkerRunsDebug()
    {
        var (host, sys, log) = Start(LogLevel.Debug);
        using var _ = host;

        LogEntry created = Only(log, "Created");
        Assert.Equal(("Allocators.MemorySystem", LogLevel.Debug), (created.Category, created.Level));
        Assert.Equal($"System {sys.Pages.Id}: 16 MiB arena (NativeMemory, Flat), 1 nodes", created.Message);

        RunShrinkers(sys);
        LogEntry run = log.Allocators.First(e => e.EventId.Name == "ShrinkerRun");
        Assert.Equal((PageCategory, LogLevel.Debug, 4), (run.Category, run.Level, run.EventId.Id));
        Assert.Matches(@"^System \d+: \d+ shrinkers freed \d+ pages for an order-0 allocation in [\d.]+ ms$", run.Message);

        long released = sys.Trimmer!.TrimNow();
        LogEntry trim = Only(log, "Trim");
        Assert.Equal(("Allocators.Reclaim.IdleTrimmer", LogLevel.Information, 5), (trim.Category, trim.Level, trim.EventId.Id));
        Assert.StartsWith($"System {sys.Pages.Id}: trim released {released} pages (idle: False) in ", trim.Message);
    }

    /// <summary>
    /// At ASP.NET Core's default level (Information) a system at work logs nothing: its creation and the shrinker runs
    /// of an allocation that may fail quietly are debug entries, and a NoWarn failure is no warning.
    /// </summary>
    [Fact]
    public void AtTheDefaultLevelRoutineWorkLogsNothing()
    {
        var (host, sys, log) = Start(LogLevel.Information);
        using var _ = host;

        RunShrinkers(sys);
        unsafe
        {
            void* p = sys.Slab.Kmalloc(100);
            sys.Slab.Kfree(p);
        }
        Assert.True(sys.Pages.AllocFailures > 0);
        Assert.Empty(log.Allocators);
    }

    [Fact]
    public void AnIdleSystemIsTrimmedAndLogsIt()
    {
        var builder = AddAllocatorsTests.NewHostBuilder(new());
        var log = new TestLoggerProvider();
        builder.Logging.AddProvider(log);
        builder.Services.AddAllocators(o => { o.ArenaSizeMiB = 16; o.IdleTrimAfter = TimeSpan.FromMilliseconds(100); });
        using IHost host = builder.Build();
        MemorySystem sys = host.Services.GetRequiredService<MemorySystem>();
        unsafe { sys.Slab.Kfree(sys.Slab.Kmalloc(4096)); }

        Assert.True(SpinWait.SpinUntil(() => log.Allocators.Any(e => e.EventId.Name == "Trim"), TimeSpan.FromSeconds(10)), "no idle trim logged");
        Assert.EndsWith(" ms", Only(log, "Trim").Message);
        Assert.Contains("(idle: True)", Only(log, "Trim").Message);
    }
}
