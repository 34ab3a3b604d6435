using System.Runtime.CompilerServices;

namespace Allocators.Cli.Bench;

/// <summary>
/// alloc-test (after ITHare's allocator test): every thread keeps a large array of slots; each step picks a random
/// slot and frees its block if it holds one, otherwise allocates a block there, so the working set hovers around half
/// the slots. Sizes follow a Pareto (power-law) distribution: mostly tiny, with a heavy tail up to 64 KiB.
/// Threads = worker threads.
/// </summary>
internal sealed class AllocTest : Workload
{
    /// <summary>Slots per thread.</summary>
    public const int Slots = 1 << 14;

    /// <summary>Smallest size (the Pareto scale).</summary>
    public const int MinSize = 8;

    /// <summary>Largest size (the tail is cut here).</summary>
    public const int MaxSize = 65536;

    /// <summary>Pareto shape.</summary>
    public const double Alpha = 1.1;

    /// <inheritdoc/>
    public override string Name => "alloc-test";

    /// <inheritdoc/>
    public override string Description =>
        $"{Slots} slots per thread, free-if-full-else-malloc at random slots, Pareto sizes (alpha {Alpha}) {MinSize} B..{MaxSize / 1024} KiB; op = one malloc or free";

    /// <summary>Pareto sizes cut at <see cref="MaxSize"/>.</summary>
    internal readonly struct Sizes : ISizeDistribution
    {
        /// <inheritdoc/>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Draw(ref FastRandom random)
        {
            double size = MinSize * Math.Pow(1.0 - random.NextDouble(), -1.0 / Alpha);
            return size >= MaxSize ? MaxSize : (int)size;
        }
    }

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
        => SlotLoop.Run<TAlloc, TBlock, Sizes>(allocator, context, Name, Slots, toggle: true);
}
