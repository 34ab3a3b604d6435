using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using Perfolizer.Horology;

namespace Allocators.Benchmarks;

/// <summary>
/// The configuration every benchmark class of this project uses (<c>[Config(typeof(BenchConfig))]</c>).
/// </summary>
/// <remarks>
/// One out-of-process job, short but stable on a 2-core machine: 3 warmup and 10 measured iterations of about
/// 250 ms each, one launch. The child process gets <see cref="StaticTls.Variable"/> so that jemalloc (built
/// with static TLS) can be loaded into it. Times are printed in nanoseconds; benchmarks of single operations
/// set <c>OperationsPerInvoke</c>, so the Mean column is nanoseconds per operation (per alloc+free pair).
/// The ratio column reads "N.NNx faster/slower" against the class's baseline; Min and Median columns are added.
/// </remarks>
public sealed class BenchConfig : ManualConfig
{
    /// <summary>Iterations measured per benchmark case.</summary>
    public const int Iterations = 10;

    /// <summary>Warmup iterations per benchmark case.</summary>
    public const int Warmups = 3;

    public BenchConfig()
    {
        AddJob(Job.Default
            .WithId("short-stable")
            .WithLaunchCount(1)
            .WithWarmupCount(Warmups)
            .WithIterationCount(Iterations)
            .WithIterationTime(TimeInterval.FromMilliseconds(250))
            .WithEnvironmentVariable(StaticTls.Name, StaticTls.Value));

        // Columns, loggers, exporters (GitHub markdown among them), analysers and validators come from
        // DefaultConfig, which BenchmarkSwitcher merges in; adding them here too would duplicate them.
        AddDiagnoser(MemoryDiagnoser.Default);
        // On a shared 2-core machine other processes inflate some iterations: Min and Median beside the Mean
        // show how much of a difference is noise.
        AddColumn(StatisticColumn.Min, StatisticColumn.Median);

        SummaryStyle = SummaryStyle.Default
            .WithTimeUnit(TimeUnit.Nanosecond)
            .WithRatioStyle(RatioStyle.Trend);
        WithOrderer(new BenchmarkDotNet.Order.DefaultOrderer(BenchmarkDotNet.Order.SummaryOrderPolicy.Declared));
    }
}
