using Allocators.Workloads.Traces;
using CsCheck;

namespace Allocators.Tests.Traces;

/// <summary>LRU and Belady's MIN simulators: textbook counts, MIN's optimality against LRU, the loop that defeats LRU.</summary>
public sealed class ReplacementPolicyTests
{
    // Silberschatz, Galvin and Gagne, Operating System Concepts, section 10.4: with 3 frames LRU faults 12 times, OPT 9.
    private static readonly int[] Textbook = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1];

    [Fact]
    public void TheTextbookReferenceStringGivesTwelveLruAndNineOptFaults()
    {
        Assert.Equal(12, LruSimulator.Faults(Textbook, 3));
        Assert.Equal(9, BeladyMin.Faults(Textbook, 3));
    }

    [Fact]
    public void TheSimulatorsCountTheSameThroughTraceReplay()
    {
        Assert.Equal(12, TraceReplay.Run(new LruSimulator(3), Textbook).MajorFaults);
        var min = TraceReplay.Run(new BeladyMin(Textbook, 3), Textbook);
        Assert.Equal(9, min.MajorFaults);
        Assert.Equal(Textbook.Length, min.Accesses);
        Assert.Equal(6, PageTrace.DistinctPages(Textbook));
    }

    [Fact]
    public void MinRefusesATraceItWasNotBuiltFor()
    {
        var min = new BeladyMin(Textbook, 3);
        Assert.Throws<InvalidOperationException>(() => min.Touch(1, write: false));
    }

    [Fact]
    public void MinNeverFaultsMoreThanLruAndBothAtLeastTheColdMisses()
    {
        Gen.Select(Gen.Int[1, 40].Array[0, 300], Gen.Int[1, 12]).Sample((trace, frames) =>
        {
            long lru = LruSimulator.Faults(trace, frames), min = BeladyMin.Faults(trace, frames);
            int cold = PageTrace.DistinctPages(trace);
            return min <= lru && min >= cold && lru <= trace.Length;
        });
    }

    [Fact]
    public void WithFramesForEveryPageOnlyColdMissesFault()
    {
        Gen.Int[0, 30].Array[0, 200].Sample(trace =>
        {
            int cold = PageTrace.DistinctPages(trace);
            return LruSimulator.Faults(trace, 31) == cold && BeladyMin.Faults(trace, 31) == cold;
        });
    }

    [Fact]
    public void TheLoopMakesLruFaultOnEveryAccessWhileMinFaultsFarLess()
    {
        const int memory = 500;
        var loop = PageTrace.Loop((int)(memory * 1.2), 30_000);
        Assert.Equal(loop.Accesses.Length, LruSimulator.Faults(loop.Accesses, memory));
        long min = BeladyMin.Faults(loop.Accesses, memory);
        // MIN keeps all but about a sixth of the loop resident: roughly 0.2 M faults per 1.2 M accesses.
        Assert.InRange(min, loop.ColdMisses, loop.Accesses.Length / 4);
    }
}
