using Allocators.Workloads.Traces;

namespace Allocators.Tests.Traces;

/// <summary>The trace generators: deterministic per seed, in range, and Zipf's skew where theory puts it.</summary>
public sealed class PageTraceTests
{
    [Fact]
    public void GeneratorsAreDeterministicPerSeedAndDifferAcrossSeeds()
    {
        var a = PageTrace.Standard(256, 20_000, seed: 7);
        var b = PageTrace.Standard(256, 20_000, seed: 7);
        var c = PageTrace.Standard(256, 20_000, seed: 8);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Accesses, b[i].Accesses);
            // The loop has no randomness; every other trace must change with the seed.
            if (a[i].Name != "loop") Assert.NotEqual(a[i].Accesses, c[i].Accesses);
        }
    }

    [Fact]
    public void EveryPageIsInsideTheFootprintAndTheFootprintsExceedMemory()
    {
        const int memory = 256;
        foreach (var trace in PageTrace.Standard(memory, 50_000))
        {
            Assert.Equal(50_000, trace.Accesses.Length);
            Assert.All(trace.Accesses, p => Assert.InRange(p, 0, trace.Footprint - 1));
            Assert.True(trace.Footprint > memory, $"{trace.Name}: footprint {trace.Footprint} must exceed memory {memory}");
        }
    }

    [Fact]
    public void ZipfTopPageFrequencyMatchesTheTheory()
    {
        const int footprint = 8192, length = 400_000;
        var trace = PageTrace.Zipf(footprint, length, seed: 3);
        int top = trace.Accesses.GroupBy(p => p).Max(g => g.Count());
        double expected = 1 / ZipfianGenerator.Zeta(footprint, ZipfianGenerator.YcsbTheta);
        // About 0.106 for 8192 pages at theta 0.99; 400k draws put the count within a few percent of it.
        Assert.InRange((double)top / length, expected * 0.95, expected * 1.05);
        Assert.Equal(expected, new ZipfianGenerator(footprint).TopProbability, 12);
    }

    [Fact]
    public void TheShiftingWorkingSetMovesBetweenPhases()
    {
        var trace = PageTrace.ShiftingWorkingSet(footprint: 2000, hotPages: 800, length: 10_000, seed: 1, phases: 10, shift: 0.25, noise: 0);
        // Phase 0 touches only [0, 800); the last phase only [1800, 2600) mod 2000.
        Assert.All(trace.Accesses[..1000], p => Assert.InRange(p, 0, 799));
        Assert.All(trace.Accesses[9000..], p => Assert.True(p >= 1800 || p < 600, $"page {p} outside the last window"));
    }
}
