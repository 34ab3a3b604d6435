using System.Runtime.CompilerServices;

namespace Allocators.Workloads;

/// <summary>
/// glibc-simple (glibc's bench-malloc-simple): for each of three sizes and each of four batch lengths, repeatedly
/// allocate a batch of blocks of that size, writing every byte, then free the first half in allocation order and the
/// second half in reverse order. Each (size, length) test runs four times: a warm-up, on the thread itself, on a newly
/// started thread, and on the thread itself again. The program is single-threaded: with more threads every thread runs
/// all of it on its own (no sharing). Threads = independent copies.
/// </summary>
/// <remarks>
/// The published run is mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, test "glibc-simple"):
/// <c>./glibc-simple</c>, no argument, so size 16. From bench/glibc-bench/bench-malloc-simple.c: main runs
/// bench(size), bench(2*size), bench(4*size), so 16, 32 and 64 bytes; NUM_ITERS 2,000,000 and allocs {25, 100, 400,
/// MAX_ALLOCS = 1600}, each test making NUM_ITERS / n rounds of n mallocs (arr[i][g] = g for every byte) and n frees
/// (the first n/2 in order, the rest from the last down); bench() runs every length as a warm-up, then on the main
/// thread, then on a new thread (joined), then on the main thread again.
/// </remarks>
internal sealed class GlibcSimple : Workload
{
    /// <summary>The three sizes (16, 2 x 16, 4 x 16).</summary>
    public static IReadOnlyList<int> Sizes { get; } = [16, 32, 64];

    /// <summary>Batch lengths (allocs).</summary>
    public static IReadOnlyList<int> BatchLengths { get; } = [25, 100, 400, 1600];

    /// <summary>Mallocs per (size, length) test in the published run (NUM_ITERS).</summary>
    public const int PublishedIterations = 2_000_000;

    /// <summary>Runs of every test per size: warm-up, this thread, a new thread, this thread again.</summary>
    public const int Passes = 4;

    /// <summary>The pass that runs on a newly started thread.</summary>
    private const int NewThreadPass = 2;

    /// <inheritdoc/>
    public override string Name => "glibc-simple";

    /// <inheritdoc/>
    public override string Description =>
        $"glibc bench-malloc-simple (mimalloc-bench: glibc-simple): sizes {string.Join('/', Sizes)} B x batches of {string.Join('/', BatchLengths)}, "
        + $"{PublishedIterations:N0} mallocs per test (every byte written), half freed in order, half in reverse, {Passes} passes (one on a new thread); "
        + $"--full runs the published count, --quick {BenchScale.Quick.Share}; each thread runs the whole program; op = malloc + free";

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        long iterations = context.Count(PublishedIterations);
        var counts = new long[context.Threads * 16];
        long errors = 0;
        var clock = Clock();
        RunThreads(context.Threads, t =>
        {
            foreach (int size in Sizes)
            {
                for (int pass = 0; pass < Passes; pass++)
                {
                    var run = new PassRun<TBlock> { Live = context.Live, Index = t, Size = size, Iterations = iterations };
                    if (pass == NewThreadPass) RunThreads(1, _ => allocator.OnThisThread(ref run), Name);
                    else allocator.OnThisThread(ref run);
                    counts[t * 16] += run.Operations;
                    Interlocked.Add(ref errors, run.Errors);
                }
            }
        }, Name);
        var elapsed = clock.Elapsed;
        return new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(counts, context.Threads), Elapsed = elapsed }
            .CheckStampsAndLive(errors, context);
    }

    /// <summary>One pass over the batch lengths at one size, with the allocator as the thread uses it.</summary>
    private struct PassRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public int Size;
        public long Iterations;
        public long Operations;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
        {
            ref long live = ref Live.Of(Index);
            foreach (int length in BatchLengths)
            {
                long rounds = Math.Max(1, Iterations / length);
                Errors += Test<TAlloc, TBlock>(ref allocator, Size, length, rounds, ref live);
                Operations += rounds * length;
            }
        }
    }

    /// <summary>A byte pattern 0, 1, 2, ... as long as the largest block: what the program writes into every block.</summary>
    private static readonly byte[] Pattern = [.. Enumerable.Range(0, 64).Select(i => (byte)i)];

    /// <summary>The first 8 bytes of <see cref="Pattern"/> as one word, checked before each free.</summary>
    private const ulong PatternHead = 0x0706_0504_0302_0100;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Test<TAlloc, TBlock>(ref TAlloc allocator, int size, int length, long rounds, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var batch = new TBlock[length];
        ref byte pattern = ref Pattern[0];
        long errors = 0;
        int half = length / 2;
        for (long r = 0; r < rounds; r++)
        {
            for (int i = 0; i < length; i++)
            {
                TBlock block = allocator.Allocate(size);
                Unsafe.CopyBlockUnaligned(ref allocator.Data(block), ref pattern, (uint)size);
                batch[i] = block;
            }
            live += (long)length * size;
            for (int i = 0; i < half; i++) errors += Release(ref allocator, batch[i]);
            for (int i = length - 1; i >= half; i--) errors += Release(ref allocator, batch[i]);
            live -= (long)length * size;
        }
        Array.Clear(batch);
        return errors;
    }

    /// <summary>Frees a block after checking its first word still holds the pattern; 1 when it did not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Release<TAlloc, TBlock>(ref TAlloc allocator, TBlock block) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        int bad = Unsafe.ReadUnaligned<ulong>(ref allocator.Data(block)) == PatternHead ? 0 : 1;
        allocator.Free(block);
        return bad;
    }
}
