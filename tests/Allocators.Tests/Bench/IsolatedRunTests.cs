using Allocators.Cli.Bench;
using Allocators.Workloads;
using Allocators.Native;
using Allocators.Peers;
using Allocators.Tests.Cli;

namespace Allocators.Tests.Bench;

/// <summary>Tests that read the process's own malloc statistics run alone: other tests' arenas come and go through glibc.</summary>
[CollectionDefinition(nameof(SerialNativeHeap), DisableParallelization = true)]
public sealed class SerialNativeHeap;

/// <summary>
/// bench --isolate: each measurement in a fresh child process, and the native allocators' own statistics as their
/// footprint there.
/// </summary>
[Collection(nameof(SerialNativeHeap))]
public sealed unsafe class IsolatedRunTests
{
    private static readonly Workload LarsonWorkload = WorkloadCatalog.Find("larson")!;

    [Fact]
    public void GlibcStatisticsFollowWhatTheHeapHolds()
    {
        var probe = NativeFootprint.For(NativeAllocators.Glibc);
        Assert.NotNull(probe);
        Assert.True(probe.Baseline > 0);
        AssertFollowsAllocations(NativeAllocators.Glibc, probe);
    }

    [Fact]
    public void EveryLoadedNativeAllocatorsStatisticsFollowWhatItHolds()
    {
        // The peers are optional here (tests must not need them): check each one that loaded and has a statistics call.
        foreach (var library in NativeAllocators.All.Where(l => l.IsAvailable && l.Name != "glibc"))
        {
            if (NativeFootprint.For(library) is { } probe) AssertFollowsAllocations(library, probe);
        }
    }

    /// <summary>
    /// Two 64 MiB blocks show as at least 120 MiB more. Blocks this big come from the OS for every allocator, except
    /// that glibc first looks in its arenas' free chunks (maps only when none fits), which its reading counts already:
    /// in a test process whose earlier work left that much free in the main arena, the free chunks shrink instead. The
    /// small-block side of glibc's reading is what the isolated larson run below checks.
    /// </summary>
    private static void AssertFollowsAllocations(NativeAllocatorLibrary library, NativeFootprint probe)
    {
        // The statistics are process-wide: memory systems the earlier tests left to their finalizers (arenas from the
        // same malloc) may be freed between the two reads. A reading that does not follow is taken again, a few times.
        string last = "";
        for (int attempt = 0; attempt < 5; attempt++)
        {
            if (Follows(library, probe, out last)) return;
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.Fail(last);
    }

    private static bool Follows(NativeAllocatorLibrary library, NativeFootprint probe, out string reading)
    {
        const nuint BlockSize = 64 << 20;
        var blocks = new nint[2];
        long before = probe.Read()!.Value;
        long? freeBefore = probe.FreeCounted();
        try
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                blocks[i] = (nint)library.Malloc(BlockSize);
                Assert.NotEqual(0, blocks[i]);
                ((byte*)blocks[i])[0] = 1;
            }
            long during = probe.Read()!.Value;
            long? freeDuring = probe.FreeCounted();
            reading = $"{library.Name}: {before} bytes before, {during} with 128 MiB more allocated (free chunks counted in them: {freeBefore} -> {freeDuring})";
            // glibc serves a block from a free chunk its arena already holds (and the reading already counts) before
            // it maps one: then the reading stays and the free chunks shrink by the blocks instead.
            return during - before >= 120L << 20 || freeBefore - freeDuring >= 120L << 20;
        }
        finally
        {
            foreach (nint b in blocks) library.Free((void*)b);
        }
    }

    [Fact]
    public void AnIsolatedRunOfANativeAllocatorReportsItsFootprint()
    {
        var glibc = AllocatorUnderTest.All.Single(a => a.Name == "glibc");

        BenchResult result = BenchIsolation.RunInChild(LarsonWorkload, glibc, 1, BenchScale.Tiny);

        Assert.True(result.Verified, result.Detail);
        Assert.Equal(("larson", "glibc", 1), (result.Workload, result.Allocator, result.Threads));
        Assert.True(result.Operations > 0);
        Assert.True(result.PeakLiveBytes > 0);
        // larson fills 5000 slots of 8..999 bytes before it starts: the C heap must have grown by at least that much.
        Assert.True(result.PeakFootprintBytes >= result.PeakLiveBytes, $"footprint {result.PeakFootprintBytes} vs live {result.PeakLiveBytes}");
    }

    [Fact]
    public void AnIsolatedRunOfAllocatorsReportsItsPages()
    {
        var kmalloc = AllocatorUnderTest.All.Single(a => a.Name == "allocators");

        BenchResult result = BenchIsolation.RunInChild(LarsonWorkload, kmalloc, 2, BenchScale.Tiny);

        Assert.True(result.Verified, result.Detail);
        Assert.True(result.PeakFootprintBytes >= result.PeakLiveBytes, $"footprint {result.PeakFootprintBytes} vs live {result.PeakLiveBytes}");
    }

    [Fact]
    public void TheChildRefusesWhatItCannotRun()
    {
        var (exit, stdout, stderr) = CliRunner.Run(TimeSpan.FromMinutes(1), BenchIsolation.ChildCommand, "no-such-workload", "glibc", "1", "tiny");
        Assert.Equal(2, exit);
        Assert.DoesNotContain(BenchIsolation.ResultPrefix, stdout, StringComparison.Ordinal);
        // On standard error, where the parent takes the reason of a failed run from.
        Assert.Contains("no-such-workload (unknown workload)", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void InThisProcessNativeRunsReportNoFootprint()
    {
        // Earlier runs leave native allocators holding memory a later run reuses: only a fresh process reads them.
        Assert.False(BenchIsolation.InFreshProcess);
        var glibc = AllocatorUnderTest.All.Single(a => a.Name == "glibc");
        using var session = glibc.Open();
        Assert.Null(session.Footprint());
    }
}
