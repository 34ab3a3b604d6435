using System.Runtime.CompilerServices;

namespace Allocators.Workloads;

/// <summary>
/// glibc-thread (glibc's bench-malloc-thread): every thread keeps a working set of slots, starting empty, and in a loop
/// frees the block in the next slot of a table of random slots and allocates one of the next size of a table of random
/// sizes there, writing every byte. Sizes have an inverse-square density between 4 B and 32 KiB. Threads = worker
/// threads.
/// </summary>
/// <remarks>
/// The published run is mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, test "glibc-thread"):
/// <c>./glibc-thread $procs</c>. From bench/glibc-bench/bench-malloc-thread.c: BENCHMARK_DURATION 2 (seconds),
/// WORKING_SET_SIZE 1024 slots per thread, zeroed at the start (the first free of a slot is free(NULL)),
/// MIN_ALLOCATION_SIZE 4, MAX_ALLOCATION_SIZE 32768, get_block_size's inverse-square distribution, a table of
/// NUM_BLOCK_SIZES 8000 sizes and one of NUM_OFFSETS = 4 x 1024 slot numbers, both drawn once and walked in turn by
/// every thread from the same start; each new block has every byte written ((char)i); the count it prints is loop
/// iterations, one free + malloc each.
/// </remarks>
internal sealed class GlibcThread : Workload
{
    /// <summary>Published run length (BENCHMARK_DURATION).</summary>
    public static readonly TimeSpan PublishedDuration = TimeSpan.FromSeconds(2);

    /// <summary>Working-set slots per thread (WORKING_SET_SIZE).</summary>
    public const int Slots = 1024;

    /// <summary>Smallest size (MIN_ALLOCATION_SIZE).</summary>
    public const int MinSize = 4;

    /// <summary>Largest size (MAX_ALLOCATION_SIZE).</summary>
    public const int MaxSize = 32768;

    /// <summary>Entries of the size table (NUM_BLOCK_SIZES).</summary>
    public const int SizeTableLength = 8000;

    /// <summary>Entries of the slot table (NUM_OFFSETS = 4 x WORKING_SET_SIZE).</summary>
    public const int SlotTableLength = 4 * Slots;

    /// <inheritdoc/>
    public override string Name => "glibc-thread";

    /// <inheritdoc/>
    public override string Description =>
        $"glibc bench-malloc-thread (mimalloc-bench: glibc-thread N): {Slots} slots per thread starting empty, free + malloc at slots from a table of {SlotTableLength}, "
        + $"sizes {MinSize} B..{MaxSize / 1024} KiB with density ~1/size^2 from a table of {SizeTableLength}, every byte written; "
        + $"--full runs the published 2 s, --quick {BenchScale.Quick.Share}; op = free + malloc";

    /// <summary>A size of get_block_size's inverse-square distribution for a uniform <paramref name="r"/> in [0, 1].</summary>
    public static int InverseSquareSize(double r)
    {
        double minPow = 1.0 / MinSize, maxPow = 1.0 / MaxSize;
        return (int)(1 / ((maxPow - minPow) * r + minPow));
    }

    /// <summary>The byte pattern 0, 1, 2, ... (wrapping) as long as the largest block: what every new block gets.</summary>
    private static readonly byte[] Pattern = [.. Enumerable.Range(0, MaxSize).Select(i => (byte)i)];

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        // Both tables are drawn once per run from a fixed seed and shared by every thread, as the program does.
        var random = new FastRandom(88);
        var sizes = new int[SizeTableLength];
        for (int i = 0; i < sizes.Length; i++) sizes[i] = InverseSquareSize(random.NextDouble());
        var slots = new int[SlotTableLength];
        for (int i = 0; i < slots.Length; i++) slots[i] = random.Below(Slots);

        var stop = new StrongBox<bool>();
        var counts = new long[context.Threads * 16];
        long errors = 0;
        var clock = Clock();
        var runner = new Thread(() => RunThreads(context.Threads, t =>
        {
            var run = new LoopRun<TBlock> { Stop = stop, Sizes = sizes, SlotTable = slots, Live = context.Live, Index = t };
            allocator.OnThisThread(ref run);
            counts[t * 16] = run.Operations;
            Interlocked.Add(ref errors, run.Errors);
        }, Name));
        runner.Start();
        StopAfter(context.Duration(PublishedDuration), stop);
        runner.Join();
        var elapsed = clock.Elapsed;
        return new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(counts, context.Threads), Elapsed = elapsed }
            .CheckStampsAndLive(errors, context);
    }

    /// <summary>One thread's loop with the allocator as the thread uses it.</summary>
    private struct LoopRun<TBlock> : IThreadRun<TBlock>
    {
        public StrongBox<bool> Stop;
        public int[] Sizes;
        public int[] SlotTable;
        public LiveCounters Live;
        public int Index;
        public long Operations;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Operations = Loop<TAlloc, TBlock>(ref allocator, Stop, Sizes, SlotTable, ref Live.Of(Index), out Errors);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Loop<TAlloc, TBlock>(ref TAlloc allocator, StrongBox<bool> stop, int[] sizeTable, int[] slotTable, ref long live, out long errors)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var blocks = new TBlock[Slots];
        var held = new int[Slots];
        ref byte pattern = ref Pattern[0];
        int sizeAt = 0, slotAt = 0;
        long operations = 0;
        errors = 0;
        // At least one round per thread: a thread that only got the CPU after the stop still measures something.
        do
        {
            for (int n = 0; n < 64; n++)
            {
                // The program advances each table index before reading it, wrapping at the end.
                slotAt = slotAt >= SlotTableLength - 1 ? 0 : slotAt + 1;
                sizeAt = sizeAt >= SizeTableLength - 1 ? 0 : sizeAt + 1;
                int slot = slotTable[slotAt];
                if (!allocator.IsNull(blocks[slot])) errors += Release(ref allocator, blocks[slot], held[slot], ref live);
                int size = sizeTable[sizeAt];
                TBlock block = allocator.Allocate(size);
                Unsafe.CopyBlockUnaligned(ref allocator.Data(block), ref pattern, (uint)size);
                blocks[slot] = block;
                held[slot] = size;
                live += size;
            }
            operations += 64;
        }
        while (!Volatile.Read(ref stop.Value));
        for (int i = 0; i < Slots; i++)
        {
            if (!allocator.IsNull(blocks[i])) errors += Release(ref allocator, blocks[i], held[i], ref live);
        }
        return operations;
    }

    /// <summary>Frees a block after checking its first and last bytes still hold the pattern; 1 when they did not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Release<TAlloc, TBlock>(ref TAlloc allocator, TBlock block, int size, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        ref byte data = ref allocator.Data(block);
        int bad = data == 0 && Unsafe.Add(ref data, size - 1) == (byte)(size - 1) ? 0 : 1;
        allocator.Free(block);
        live -= size;
        return bad;
    }
}
