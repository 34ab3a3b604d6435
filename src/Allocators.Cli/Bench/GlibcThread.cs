using System.Runtime.CompilerServices;

namespace Allocators.Cli.Bench;

/// <summary>
/// glibc-thread (after glibc's bench-malloc-thread): every thread keeps a working set of slots and, in a loop,
/// frees a random slot's block and allocates a new one there, sizes drawn with probability inversely proportional
/// to size between 8 B and 32 KiB. Threads = worker threads.
/// </summary>
internal sealed class GlibcThread : Workload
{
    /// <summary>Working-set slots per thread.</summary>
    public const int Slots = 1024;

    /// <summary>Smallest size.</summary>
    public const int MinSize = 8;

    /// <summary>Largest size.</summary>
    public const int MaxSize = 32768;

    /// <inheritdoc/>
    public override string Name => "glibc-thread";

    /// <inheritdoc/>
    public override string Description =>
        $"{Slots} slots per thread, random replacement, sizes {MinSize} B..{MaxSize / 1024} KiB with density ~1/size; op = free + malloc";

    /// <summary>Log-uniform sizes: density proportional to 1/size.</summary>
    internal readonly struct Sizes : ISizeDistribution
    {
        private static readonly double Ratio = Math.Log((double)MaxSize / MinSize);

        /// <inheritdoc/>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Draw(ref FastRandom random) => (int)(MinSize * Math.Exp(Ratio * random.NextDouble()));
    }

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
        => SlotLoop.Run<TAlloc, TBlock, Sizes>(allocator, context, Name, Slots, toggle: false);
}
