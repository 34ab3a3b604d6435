using Allocators.Cli.Bench;
using Allocators.Workloads;
using Allocators.Native;
using Allocators.Peers;

namespace Allocators.Tests.Bench;

/// <summary>
/// Every workload named after a published benchmark runs at that benchmark's published parameters: the values below are
/// typed in from mimalloc-bench's bench.sh and its bench/ sources (see each workload's remarks), not computed from the
/// code under test; and a few behaviours check that the code uses them.
/// </summary>
public sealed class PublishedParametersTests
{
    [Fact]
    public void LarsonIsLarson5_8_1000_5000_100_4141()
    {
        Assert.Equal(TimeSpan.FromSeconds(5), Larson.PublishedDuration);
        Assert.Equal(8, Larson.MinSize);
        Assert.Equal(1000, Larson.MaxSize);
        Assert.Equal(5000, Larson.Slots);
        Assert.Equal(100, Larson.Rounds);
        Assert.Equal(4141UL, Larson.Seed);
        Assert.Equal(4, Larson.WarmupReplacementsPerSlot);
        // A slot array moves to a new thread every num_rounds * chperthread replacements.
        Assert.Equal(500_000, Larson.ReplacementsPerThread);
    }

    [Fact]
    public void LarsonHandsItsSlotsToANewThreadEvery500000Replacements()
    {
        // 1 thread for 0.6 s (12 % of the published 5 s): one slot array, so every handoff ends exactly one full turn.
        var scale = new BenchScale("test", 0.12, TimeSpan.Zero, 6, 1);
        var context = new RunContext(1, scale);

        var outcome = new Larson().Run<NativeLibraryAllocator, nint>(new NativeLibraryAllocator(NativeAllocators.Glibc), context);

        Assert.True(outcome.Verified, outcome.Detail);
        Assert.True(outcome.Handoffs >= 1, $"{outcome.Operations} replacements made no handoff");
        Assert.Equal(outcome.Operations / 500_000, outcome.Handoffs);
    }

    [Fact]
    public void XmallocTestIsW_T5_S64WithTheProgramsBatches()
    {
        Assert.Equal(TimeSpan.FromSeconds(5), XmallocTest.PublishedDuration);
        Assert.Equal(64, XmallocTest.BlockSize);
        Assert.Equal(4096, XmallocTest.ObjectsPerBatch);
        Assert.Equal(100, XmallocTest.BatchLimit);
        Assert.Equal(64, XmallocTest.WrittenBytes);
    }

    [Fact]
    public void GlibcSimpleIsBenchMallocSimpleAtSize16()
    {
        Assert.Equal(new[] { 16, 32, 64 }, GlibcSimple.Sizes);
        Assert.Equal(new[] { 25, 100, 400, 1600 }, GlibcSimple.BatchLengths);
        Assert.Equal(2_000_000, GlibcSimple.PublishedIterations);
        Assert.Equal(4, GlibcSimple.Passes);
    }

    [Fact]
    public void GlibcSimpleCountsEveryMallocOfEveryPass()
    {
        var context = new RunContext(2, BenchScale.Tiny);
        var outcome = new GlibcSimple().Run<NativeLibraryAllocator, nint>(new NativeLibraryAllocator(NativeAllocators.Glibc), context);

        Assert.True(outcome.Verified, outcome.Detail);
        // Tiny: 1,000 mallocs per test, so 40 x 25, 10 x 100, 2 x 400 and 1 x 1600 (at least one round), for 3 sizes x 4 passes.
        Assert.Equal(2 * 3 * 4 * (1000 + 1000 + 800 + 1600), outcome.Operations);
    }

    [Fact]
    public void GlibcThreadIsBenchMallocThread()
    {
        Assert.Equal(TimeSpan.FromSeconds(2), GlibcThread.PublishedDuration);
        Assert.Equal(1024, GlibcThread.Slots);
        Assert.Equal(4, GlibcThread.MinSize);
        Assert.Equal(32768, GlibcThread.MaxSize);
        Assert.Equal(8000, GlibcThread.SizeTableLength);
        Assert.Equal(4096, GlibcThread.SlotTableLength);
        // Inverse-square density: the smallest at 0, the largest at 1, and half of all sizes below 8 bytes.
        Assert.Equal(4, GlibcThread.InverseSquareSize(0));
        Assert.InRange(GlibcThread.InverseSquareSize(1), 32767, 32768);
        Assert.InRange(GlibcThread.InverseSquareSize(0.5), 7, 8);
    }

    [Fact]
    public void MStressIsMstressN_50_25()
    {
        Assert.Equal(25, MStress.PublishedIterations);
        Assert.Equal(50, MStress.Scale);
        Assert.Equal(1000, MStress.TransferSlots);
        Assert.Equal(5000, MStress.AllocationsOf(0));
        Assert.Equal(40_000, MStress.AllocationsOf(7));
        Assert.Equal(5000, MStress.AllocationsOf(8));
    }

    [Fact]
    public void MStressMakesEveryThreadsAllocationsAndRetainedBlocksPerIteration()
    {
        var context = new RunContext(2, BenchScale.Tiny);
        var outcome = new MStress().Run<NativeLibraryAllocator, nint>(new NativeLibraryAllocator(NativeAllocators.Glibc), context);

        Assert.True(outcome.Verified, outcome.Detail);
        // Tiny runs the fewest iterations; each thread t makes allocs + allocs / 2 mallocs per iteration.
        long perIteration = 5000 + 2500 + 10_000 + 5000;
        Assert.Equal(MStress.MinIterations * perIteration, outcome.Operations);
    }

    [Fact]
    public void AllocTestIsAllocTestWithBench4()
    {
        Assert.Equal(1 << 18, AllocTest.TotalSlots);
        Assert.Equal(100_000_000, AllocTest.PublishedOperations);
        Assert.Equal(10, AllocTest.MaxSizeExponent);
        Assert.Equal(41UL, AllocTest.Seed);
        Assert.Equal(new[] { 0.262144, 0.393216, 0.245760, 0.081920, 0.015360, 0.001536, 0.000064 }, AllocTest.RangeProbabilities);
    }

    [Fact]
    public void AllocTestSizesAndSlotsFollowTheProgramsDistributions()
    {
        var random = new FastRandom(7);
        int small = 0, n = 100_000;
        for (int i = 0; i < n; i++)
        {
            int size = AllocTest.SizeOf(random.Next());
            Assert.InRange(size, 5, 1024);
            if (size <= 8) small++;
        }
        Assert.InRange(small / (double)n, 0.48, 0.52);

        // The hottest range is 0.000064 of the slots (16 of 2^18) and takes 26 % of the picks.
        var slots = new AllocTest.ParetoSlots(1 << 18);
        int hot = 0;
        for (int i = 0; i < n; i++)
        {
            if (slots.Pick((uint)(random.Next() >> 32), (uint)(random.Next() >> 32)) < 16) hot++;
        }
        Assert.InRange(hot / (double)n, 0.25, 0.275);
    }

    [Fact]
    public void CacheScratchAndThrashAreN_1000_1_2000000()
    {
        Assert.Equal(1, FalseSharingWorkload.ObjectSize);
        Assert.Equal(1000, FalseSharingWorkload.PublishedIterations);
        Assert.Equal(2_000_000, FalseSharingWorkload.Repetitions);
    }

    [Fact]
    public void CacheThrashWritesTheSameTotalAtEveryThreadCount()
    {
        foreach (int threads in new[] { 1, 2 })
        {
            var context = new RunContext(threads, BenchScale.Tiny);
            var outcome = new CacheThrash().Run<NativeLibraryAllocator, nint>(new NativeLibraryAllocator(NativeAllocators.Glibc), context);
            Assert.True(outcome.Verified, outcome.Detail);
            // Tiny makes one allocation per thread; each thread writes its object 2,000,000 / threads times.
            Assert.Equal(2_000_000, outcome.Operations);
        }
    }

    [Fact]
    public void BinaryTreesRunsThePublishedDepthInFull()
    {
        Assert.Equal(21, BenchScale.Full.TreeDepth);
        Assert.Equal(4, BinaryTrees.MinDepth);
        Assert.Equal(16, BinaryTrees.NodeSize);
    }

    [Fact]
    public void FullIsThePublishedRunAndQuickOnlyShortensIt()
    {
        Assert.True(BenchScale.Full.IsPublished);
        var full = new RunContext(2, BenchScale.Full);
        Assert.Equal(TimeSpan.FromSeconds(5), full.Duration(Larson.PublishedDuration));
        Assert.Equal(100_000_000, full.Count(AllocTest.PublishedOperations));

        var quick = new RunContext(2, BenchScale.Quick);
        Assert.False(BenchScale.Quick.IsPublished);
        Assert.Equal(TimeSpan.FromSeconds(5.0 / 32), quick.Duration(Larson.PublishedDuration));
        Assert.Equal(31, quick.Count(FalseSharingWorkload.PublishedIterations));
        Assert.Equal(MStress.MinIterations, quick.Count(MStress.PublishedIterations, MStress.MinIterations));
    }
}
