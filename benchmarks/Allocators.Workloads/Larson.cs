using System.Runtime.CompilerServices;

namespace Allocators.Workloads;

/// <summary>
/// larson (Larson and Krishnan's server simulation): each thread owns an array of slots holding blocks of random
/// size; it repeatedly frees a random slot's block and puts a new random-size block there, and after a fixed number
/// of replacements it hands its whole array to a newly started thread and exits, so blocks are freed by threads
/// other than the one that allocated them and threads come and go all the time. The main thread first fills every
/// array, shuffles the blocks across them and replaces some at random (the program's warm-up). Threads = number of
/// slot arrays (each always served by exactly one live thread).
/// </summary>
/// <remarks>
/// The published run is mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, test "larson"):
/// <c>./larson 5 8 1000 5000 100 4141 $procs</c>, whose arguments bench/larson/larson.cpp's main reads as sleep_cnt 5
/// (seconds), min_size 8, max_size 1000, chperthread 5000, num_rounds 100, seed 4141, threads. From the same file:
/// runthreads gives each thread NumBlocks = num_rounds * chperthread = 500,000 replacements before exercise_heap
/// starts a new thread on the same array; a size is min_size + lran2() % (max_size - min_size), so 8..999 bytes;
/// warmup allocates all threads * chperthread chunks on the main thread, permutes them at random and then makes 4
/// replacements per chunk; the throughput it prints counts one free + malloc pair as one operation.
/// </remarks>
internal sealed class Larson : Workload
{
    /// <summary>Published run length (sleep_cnt).</summary>
    public static readonly TimeSpan PublishedDuration = TimeSpan.FromSeconds(5);

    /// <summary>Smallest block (min_size).</summary>
    public const int MinSize = 8;

    /// <summary>The size bound (max_size): sizes are drawn below it, so the largest block is 999 bytes.</summary>
    public const int MaxSize = 1000;

    /// <summary>Slots per array (chperthread).</summary>
    public const int Slots = 5000;

    /// <summary>Rounds over the slots a thread makes before it hands its array on (num_rounds).</summary>
    public const int Rounds = 100;

    /// <summary>Replacements a thread does before it hands its array to a new thread (NumBlocks = num_rounds * chperthread).</summary>
    public const int ReplacementsPerThread = Rounds * Slots;

    /// <summary>Random replacements per chunk the main thread makes after filling and shuffling the arrays (warmup).</summary>
    public const int WarmupReplacementsPerSlot = 4;

    /// <summary>Seed of the main thread's generator, which also draws every thread's seed.</summary>
    public const ulong Seed = 4141;

    /// <summary>
    /// Bytes kmalloc hands out per byte larson requests (size-class rounding alone, averaged over the uniform size
    /// range): a floor under the footprint / live ratio that no slab-level improvement can go below.
    /// </summary>
    public static double KmallocRounding()
    {
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new Allocators.Physical.PhysicalMemoryOptions { Size = 8L << 20 } });
        double requested = 0, handedOut = 0;
        for (int size = MinSize; size < MaxSize; size++)
        {
            requested += size;
            handedOut += system.Slab.KmallocCache((nuint)size)!.ObjectSize;
        }
        return handedOut / requested;
    }

    /// <inheritdoc/>
    public override string Name => "larson";

    /// <inheritdoc/>
    public override string Description =>
        $"server simulation (mimalloc-bench: larson 5 8 1000 5000 100 4141 N): {Slots} slots per thread, random sizes {MinSize}..{MaxSize - 1} B, "
        + $"a new thread takes over the slots every {ReplacementsPerThread:N0} replacements; --full runs the published 5 s, --quick {BenchScale.Quick.Share}; op = free + malloc";

    private sealed class SlotArray<TBlock>(int index, int slots)
    {
        public readonly int Index = index;
        public readonly TBlock[] Blocks = new TBlock[slots];
        public FastRandom Random;
        public long Operations;
        public long Handoffs;
        public long StampErrors;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int threads = context.Threads;
        var arrays = Warmup<TAlloc, TBlock>(allocator, threads, ref context.Live.Of(threads));

        var stop = new StrongBox<bool>();
        using var finished = new CountdownEvent(threads);
        using var started = new CountdownEvent(threads);
        Exception? failure = null;

        void Serve(SlotArray<TBlock> array)
        {
            try
            {
                if (array.Handoffs == 0) started.Signal();
                var run = new ReplaceRun<TBlock> { Array = array, Live = context.Live, Stop = stop };
                allocator.OnThisThread(ref run);
                bool stopped = run.Stopped;
                if (!stopped)
                {
                    array.Handoffs++;
                    var next = new Thread(() => Serve(array), 256 << 10) { IsBackground = true, Name = "larson" };
                    next.Start();
                    return;
                }
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref failure, ex, null);
            }
            finished.Signal();
        }

        var clock = Clock();
        foreach (var array in arrays)
        {
            new Thread(() => Serve(array), 256 << 10) { IsBackground = true, Name = "larson" }.Start();
        }
        // The run lasts its duration from when every first thread is running: a short run must not end before they start.
        started.Wait();
        StopAfter(context.Duration(PublishedDuration), stop);
        finished.Wait();
        var elapsed = clock.Elapsed;
        if (failure is not null) throw new InvalidOperationException("larson worker failed: " + failure.Message, failure);

        long operations = 0, handoffs = 0, stampErrors = 0;
        foreach (var array in arrays)
        {
            ref long live = ref context.Live.Of(array.Index);
            foreach (TBlock block in array.Blocks)
            {
                int size = ReadStamp(ref allocator.Data(block));
                if (size < 0) array.StampErrors++;
                else live -= size;
                allocator.Free(block);
            }
            Array.Clear(array.Blocks);
            operations += array.Operations;
            handoffs += array.Handoffs;
            stampErrors += array.StampErrors;
        }
        var outcome = new WorkloadOutcome { Operations = operations, Elapsed = elapsed, Handoffs = handoffs };
        outcome.CheckStampsAndLive(stampErrors, context);
        if (outcome.Verified) outcome.Detail = $"{handoffs:N0} thread handoffs";
        return outcome;
    }

    /// <summary>
    /// The main thread's set-up: every array's blocks allocated, shuffled across all arrays, then replaced at random
    /// <see cref="WarmupReplacementsPerSlot"/> times per slot; each array gets its own seed from the main generator.
    /// </summary>
    private static SlotArray<TBlock>[] Warmup<TAlloc, TBlock>(TAlloc allocator, int threads, ref long live)
        where TAlloc : struct, IBlockAllocator<TBlock>
    {
        var random = new FastRandom(Seed);
        var all = new TBlock[threads * Slots];
        for (int i = 0; i < all.Length; i++) all[i] = NewBlock<TAlloc, TBlock>(ref allocator, ref random, ref live);
        for (int n = all.Length; n > 0; n--)
        {
            int victim = random.Below(n);
            (all[victim], all[n - 1]) = (all[n - 1], all[victim]);
        }
        long stampErrors = 0;
        for (long n = 0; n < (long)WarmupReplacementsPerSlot * all.Length; n++)
        {
            int victim = random.Below(all.Length);
            live -= FreeBlock(ref allocator, all[victim], ref stampErrors);
            all[victim] = NewBlock<TAlloc, TBlock>(ref allocator, ref random, ref live);
        }
        if (stampErrors != 0) throw new InvalidOperationException($"larson: {stampErrors} blocks had a corrupted stamp during the warm-up");
        var arrays = new SlotArray<TBlock>[threads];
        for (int t = 0; t < threads; t++)
        {
            arrays[t] = new SlotArray<TBlock>(t, Slots) { Random = new FastRandom(random.Next()) };
            Array.Copy(all, t * Slots, arrays[t].Blocks, 0, Slots);
        }
        return arrays;
    }

    /// <summary>A block of a random larson size, stamped with its size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TBlock NewBlock<TAlloc, TBlock>(ref TAlloc allocator, ref FastRandom random, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        int size = MinSize + random.Below(MaxSize - MinSize);
        TBlock block = allocator.Allocate(size);
        Stamp(ref allocator.Data(block), size);
        live += size;
        return block;
    }

    /// <summary>Frees a stamped block; returns its size (0 when the stamp was overwritten, counted in <paramref name="stampErrors"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FreeBlock<TAlloc, TBlock>(ref TAlloc allocator, TBlock block, ref long stampErrors)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        int size = ReadStamp(ref allocator.Data(block));
        allocator.Free(block);
        if (size >= 0) return size;
        stampErrors++;
        return 0;
    }

    /// <summary>One thread's turn over its slot array (<see cref="Replace"/>), with the allocator as the thread uses it.</summary>
    private struct ReplaceRun<TBlock> : IThreadRun<TBlock>
    {
        public SlotArray<TBlock> Array;
        public LiveCounters Live;
        public StrongBox<bool> Stop;
        public bool Stopped;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Stopped = Replace(ref allocator, Array, ref Live.Of(Array.Index), Stop);
    }

    /// <summary>One thread's turn; true when it stopped because the run is over.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static bool Replace<TAlloc, TBlock>(ref TAlloc allocator, SlotArray<TBlock> array, ref long live, StrongBox<bool> stop)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        TBlock[] blocks = array.Blocks;
        FastRandom random = array.Random;
        long done = 0, stampErrors = 0;
        bool stopped = false;
        // larson checks its stop flag after every replacement; every 64 costs less and stops as promptly at this rate.
        while (done < ReplacementsPerThread)
        {
            if (Volatile.Read(ref stop.Value)) { stopped = true; break; }
            int step = (int)Math.Min(64, ReplacementsPerThread - done);
            for (int i = 0; i < step; i++)
            {
                int victim = random.Below(blocks.Length);
                live -= FreeBlock(ref allocator, blocks[victim], ref stampErrors);
                blocks[victim] = NewBlock<TAlloc, TBlock>(ref allocator, ref random, ref live);
            }
            done += step;
        }
        array.Random = random;
        array.Operations += done;
        array.StampErrors += stampErrors;
        return stopped;
    }
}
