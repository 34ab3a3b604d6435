using Allocators.Cli.Bench;
using Allocators.Workloads;

namespace Allocators.Tests.Bench;

/// <summary>binary-trees prints exactly the Benchmarks Game's output.</summary>
public sealed class BinaryTreesTests
{
    // The published expected output for depth 21, typed in from the Benchmarks Game's description (not computed).
    private const string PublishedDepth21 =
        "stretch tree of depth 22\t check: 8388607\n" +
        "2097152\t trees of depth 4\t check: 65011712\n" +
        "524288\t trees of depth 6\t check: 66584576\n" +
        "131072\t trees of depth 8\t check: 66977792\n" +
        "32768\t trees of depth 10\t check: 67076096\n" +
        "8192\t trees of depth 12\t check: 67100672\n" +
        "2048\t trees of depth 14\t check: 67106816\n" +
        "512\t trees of depth 16\t check: 67108352\n" +
        "128\t trees of depth 18\t check: 67108736\n" +
        "32\t trees of depth 20\t check: 67108832\n" +
        "long lived tree of depth 21\t check: 4194303\n";

    private const string Depth6 =
        "stretch tree of depth 7\t check: 255\n" +
        "64\t trees of depth 4\t check: 1984\n" +
        "16\t trees of depth 6\t check: 2032\n" +
        "long lived tree of depth 6\t check: 127\n";

    [Fact]
    public void ExpectedOutputForDepth21IsThePublishedOne() => Assert.Equal(PublishedDepth21, BinaryTrees.ExpectedOutput(21));

    [Fact]
    public void ExpectedOutputForDepth6() => Assert.Equal(Depth6, BinaryTrees.ExpectedOutput(6));

    [Theory]
    [InlineData("allocators")]
    [InlineData("allocators-cache")]
    [InlineData("glibc")]
    [InlineData("GC")]
    [InlineData("NativeMemory")]
    public void Depth6RunPrintsTheExpectedOutput(string allocatorName)
    {
        var allocator = AllocatorUnderTest.All.Single(a => a.Name == allocatorName);
        var workload = new BinaryTrees();
        var context = new RunContext(2, BenchScale.Tiny);
        using var session = allocator.Open();

        var outcome = session.Run(workload, context);
        session.Verify(outcome);

        Assert.True(outcome.Verified, outcome.Detail);
        Assert.Equal(Depth6, outcome.Output);
        Assert.Equal(0, context.Live.Sum());
    }
}
