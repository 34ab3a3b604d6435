using System.Numerics;
using System.Runtime.CompilerServices;

namespace Allocators.Workloads;

/// <summary>
/// alloc-test (OLogN/ITHare's allocator test): every thread owns a share of 2^18 slots, fills about half of them, then
/// at each step picks a slot with an 80/20 Pareto skew (a few slots are picked most of the time) and frees its block
/// if it holds one (reading every byte first), otherwise allocates one there and writes every byte. Sizes are 5..1024
/// bytes: half of them up to 8, a quarter 9..16, and so on. Threads = worker threads.
/// </summary>
/// <remarks>
/// The published runs are mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, test "alloc-test"):
/// <c>./alloc-test 1</c> and <c>./alloc-test $procs</c> (at most 16), built with BENCH=4 (bench/CMakeLists.txt), so one run
/// at that thread count. From bench/alloc-test/allocator_tester.cpp's main: maxItems 1 &lt;&lt; 18 shared out as
/// maxItems / threadCount per thread, iterCount 100,000,000 per thread, maxItemSize exponent 10, memory access "full",
/// rndSeed 41 for every thread; it reports iterCount x threads operations over the whole run. From
/// allocator_tester.h's randomPos_RandomSize: the set-up fills each slot when a random bit is set; a step takes the
/// slot from Pareto_80_20_6_Rand (seven ranges of the slots, the smallest picked with probability 0.262144, then
/// 0.393216, 0.24576, 0.08192, 0.01536, 0.001536, 0.000064 for the largest, each range as large as the probability
/// read from the other end); calcSizeWithStatsAdjustment draws the size; "full" access memsets a new block with the
/// low byte of its size and reads every word of a block before freeing it. Difference: the slot table (16 bytes a
/// slot, malloced by the program) is a managed array here, so ArrayPool and the GC can run it too.
/// </remarks>
internal sealed class AllocTest : Workload
{
    /// <summary>Slots of all threads together (maxItems).</summary>
    public const int TotalSlots = 1 << 18;

    /// <summary>Steps per thread in the published run (iterCount).</summary>
    public const long PublishedOperations = 100_000_000;

    /// <summary>Largest size as a power of two (maxItemSize).</summary>
    public const int MaxSizeExponent = 10;

    /// <summary>Every thread's seed (rndSeed).</summary>
    public const ulong Seed = 41;

    /// <summary>Probability of each of the seven slot ranges, hottest (and smallest) first (Pareto_80_20_6).</summary>
    public static IReadOnlyList<double> RangeProbabilities { get; } = [0.262144, 0.393216, 0.245760, 0.081920, 0.015360, 0.001536, 0.000064];

    /// <inheritdoc/>
    public override string Name => "alloc-test";

    /// <inheritdoc/>
    public override string Description =>
        $"mimalloc-bench alloc-test N: {TotalSlots:N0} slots shared out, half filled, Pareto 80/20 slot choice, free-if-full-else-malloc, "
        + $"sizes 5..{1 << MaxSizeExponent} B (half of them up to 8), every byte written and read; {PublishedOperations:N0} steps per thread in --full, "
        + $"--quick {BenchScale.Quick.Share}; op = one malloc or free";

    /// <summary>The program's size for 64 random bits: a power-of-two class (half the time the smallest), then uniform within it.</summary>
    public static int SizeOf(ulong random)
    {
        const int ClassBits = MaxSizeExponent - 3;
        uint classBase = (uint)(random & ((1u << ClassBits) - 1)) + 1;
        random >>= ClassBits;
        int exponent = BitOperations.TrailingZeroCount(classBase) + 2;
        return (int)(random & ((1UL << exponent) - 1)) + 1 + (1 << exponent);
    }

    /// <summary>The Pareto slot picker of one thread's <paramref name="slots"/> slots.</summary>
    internal sealed class ParetoSlots
    {
        private readonly uint[] _limits = new uint[6];
        private readonly uint[] _offsets = new uint[8];

        /// <summary>Ranges over <paramref name="slots"/> slots.</summary>
        public ParetoSlots(int slots)
        {
            var p = RangeProbabilities;
            _limits[0] = (uint)(uint.MaxValue * p[0]);
            _limits[5] = (uint)(uint.MaxValue * (1 - p[6]));
            for (int i = 1; i < 5; i++) _limits[i] = _limits[i - 1] + (uint)(uint.MaxValue * p[i]);
            _offsets[7] = (uint)slots;
            for (int i = 0; i < 6; i++) _offsets[i + 1] = _offsets[i] + (uint)(slots * p[6 - i]);
        }

        /// <summary>The slot for two random words: the first picks the range, the second the slot in it.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Pick(uint rangeRandom, uint slotRandom)
        {
            int range = 6;
            for (int i = 0; i < 6; i++)
            {
                if (rangeRandom < _limits[i])
                {
                    range = i;
                    break;
                }
            }
            uint size = _offsets[range + 1] - _offsets[range];
            // A range rounds to no slot only past the program's 16 threads; its first slot stands in then.
            return (int)(_offsets[range] + (size == 0 ? 0 : slotRandom % size));
        }
    }

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int slots = TotalSlots / context.Threads;
        long steps = context.Count(PublishedOperations) >> 5 << 5;
        steps = Math.Max(32, steps);
        long errors = 0;
        var clock = Clock();
        RunThreads(context.Threads, t =>
        {
            var run = new TestRun<TBlock> { Slots = slots, Steps = steps, Live = context.Live, Index = t };
            allocator.OnThisThread(ref run);
            Interlocked.Add(ref errors, run.Errors);
        }, Name);
        var elapsed = clock.Elapsed;
        return new WorkloadOutcome { Operations = steps * context.Threads, Elapsed = elapsed }.CheckStampsAndLive(errors, context);
    }

    /// <summary>One thread's test with the allocator as the thread uses it.</summary>
    private struct TestRun<TBlock> : IThreadRun<TBlock>
    {
        public int Slots;
        public long Steps;
        public LiveCounters Live;
        public int Index;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Errors = Test<TAlloc, TBlock>(ref allocator, Slots, Steps, ref Live.Of(Index));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Test<TAlloc, TBlock>(ref TAlloc allocator, int slots, long steps, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var blocks = new TBlock[slots];
        var sizes = new int[slots];
        var pareto = new ParetoSlots(slots);
        var random = new FastRandom(Seed);
        long errors = 0;
        for (int i = 0; i < slots / 32; i++)
        {
            uint bits = (uint)(random.Next() >> 32);
            for (int j = 0; j < 32; j++)
            {
                if (((bits >> j) & 1) != 0) blocks[i * 32 + j] = New<TAlloc, TBlock>(ref allocator, ref sizes[i * 32 + j], random.Next(), ref live);
            }
        }
        for (long n = 0; n < steps; n++)
        {
            int slot = pareto.Pick((uint)(random.Next() >> 32), (uint)(random.Next() >> 32));
            if (!allocator.IsNull(blocks[slot]))
            {
                errors += Release(ref allocator, blocks[slot], sizes[slot], ref live);
                blocks[slot] = default!;
            }
            else
            {
                blocks[slot] = New<TAlloc, TBlock>(ref allocator, ref sizes[slot], random.Next(), ref live);
            }
        }
        for (int i = 0; i < slots; i++)
        {
            if (!allocator.IsNull(blocks[i])) errors += Release(ref allocator, blocks[i], sizes[i], ref live);
        }
        return errors;
    }

    /// <summary>A block of the program's random size, every byte set to the size's low byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TBlock New<TAlloc, TBlock>(ref TAlloc allocator, ref int size, ulong random, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        size = SizeOf(random);
        TBlock block = allocator.Allocate(size);
        Unsafe.InitBlockUnaligned(ref allocator.Data(block), (byte)size, (uint)size);
        live += size;
        return block;
    }

    /// <summary>Reads every byte of a block (they must all be its size's low byte) and frees it; 1 when one was not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Release<TAlloc, TBlock>(ref TAlloc allocator, TBlock block, int size, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        ref byte data = ref allocator.Data(block);
        ulong expected = 0x0101_0101_0101_0101UL * (byte)size;
        ulong differ = 0;
        int i = 0;
        for (; i + sizeof(ulong) <= size; i += sizeof(ulong)) differ |= Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref data, i)) ^ expected;
        for (; i < size; i++) differ |= (uint)(Unsafe.Add(ref data, i) ^ (byte)size);
        allocator.Free(block);
        live -= size;
        return differ == 0 ? 0 : 1;
    }
}
