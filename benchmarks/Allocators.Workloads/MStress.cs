using System.Runtime.CompilerServices;

namespace Allocators.Workloads;

/// <summary>
/// mstress (the stress test shipped with mimalloc): in each iteration the calling thread and N - 1 new threads each make
/// a different number of allocations of 1..16 words (kept in a growing array, 67 % of steps freeing a random earlier one,
/// 26 % swapping one with a shared transfer array, so blocks migrate between threads) and a retained set of 1..64
/// words, 2 % of them 100, 1000 or 10000 times larger; every word is written and checked on free. At the end of its
/// work a thread frees everything it holds; after each iteration the main thread frees about half of the transfer
/// array, and the rest survives into the next iteration. Threads = threads per iteration.
/// </summary>
/// <remarks>
/// The published run is mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, test "mstress"):
/// <c>./mstress $procs 50 25</c>, read by bench/mstress/mstress.c's main as THREADS, SCALE 50, ITER 25. From the same
/// file: TRANSFERS 1000; stress(tid) makes allocs = 100 * SCALE * (tid % 8 + 1) allocations of 1 &lt;&lt; (r % 5) words and
/// retain = allocs / 2 of 1 &lt;&lt; (r % 7) words, choosing an allocation with chance(50) while both remain; then
/// chance(66) frees a random one of them and chance(25) swaps one with a random transfer slot; chance(p) is r % 100 &lt;= p;
/// alloc_items multiplies the words by 10000 with chance(1) within chance(1), else by 1000 with chance(10), else by
/// 100; every word is (items - i) ^ cookie and free_items checks them all; run_os_threads runs tid 0 on the main thread;
/// after each iteration chance(50) frees each transfer slot, and the last iteration frees them all. Differences: the
/// one size above Allocators' largest kmalloc (64 words x 10000 = 5,120,000 bytes, a few in a run) is capped at 4 MiB
/// for every allocator; and each thread's arrays of pointers are managed arrays (the program mallocs them) so ArrayPool
/// and the GC can run it too.
/// </remarks>
internal sealed class MStress : Workload
{
    /// <summary>Iterations, each with fresh threads (ITER).</summary>
    public const int PublishedIterations = 25;

    /// <summary>
    /// Fewest iterations a shortened run makes: one would never carry transfer blocks into a next iteration, and a
    /// published iteration is only milliseconds long.
    /// </summary>
    public const int MinIterations = 4;

    /// <summary>The load factor (SCALE).</summary>
    public const int Scale = 50;

    /// <summary>Slots of the shared transfer array (TRANSFERS).</summary>
    public const int TransferSlots = 1000;

    /// <summary>Allocations thread <paramref name="tid"/> makes per iteration besides its retained ones: 100 x SCALE x (tid % 8 + 1).</summary>
    public static int AllocationsOf(int tid) => 100 * Scale * (tid % 8 + 1);

    /// <summary>Words of the largest block: 4 MiB, Allocators' largest kmalloc.</summary>
    public const long MaxWords = (4L << 20) / sizeof(ulong);

    /// <summary>What every word of a block is XORed with (the program's 64-bit cookie).</summary>
    private const ulong Cookie = 0xbf58476d1ce4e5b9UL;

    /// <inheritdoc/>
    public override string Name => "mstress";

    /// <inheritdoc/>
    public override string Description =>
        $"mimalloc-bench mstress N {Scale} {PublishedIterations}: {PublishedIterations} iterations of fresh threads, thread t makes {100 * Scale:N0} x (t % 8 + 1) allocations "
        + $"of 1..16 words plus half as many retained of 1..64, 2 % of them 100-10000 x larger, blocks swapped through {TransferSlots} shared slots, every word written and checked; "
        + $"--full runs the published {PublishedIterations} iterations, --quick {BenchScale.Quick.Share} but at least {MinIterations}; op = one malloc (each freed once)";

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int threads = context.Threads;
        long iterations = context.Count(PublishedIterations, MinIterations);
        var transfer = new TBlock[TransferSlots];
        var totals = new long[threads * 16];
        long errors = 0;
        var random = new FastRandom(43 * 43);
        ref long mainLive = ref context.Live.Of(threads);

        var clock = Clock();
        for (long n = 0; n < iterations; n++)
        {
            void Work(int tid)
            {
                var run = new StressRun<TBlock> { Tid = tid, Transfer = transfer, Live = context.Live };
                allocator.OnThisThread(ref run);
                totals[tid * 16] += run.Allocations;
                Interlocked.Add(ref errors, run.Errors);
            }
            var others = new Thread(() => RunThreads(threads - 1, i => Work(i + 1), Name));
            others.Start();
            Work(0); // the program's main thread runs tid 0 itself
            others.Join();
            for (int i = 0; i < TransferSlots; i++)
            {
                if (random.Below(100) <= 50 || n + 1 == iterations)
                {
                    TBlock block = Interlocked.Exchange(ref transfer[i], default!);
                    if (!allocator.IsNull(block)) errors += FreeItems(ref allocator, block, ref mainLive);
                }
            }
        }
        var elapsed = clock.Elapsed;
        return new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(totals, threads), Elapsed = elapsed }
            .CheckStampsAndLive(errors, context);
    }

    /// <summary>One thread's share of an iteration (the program's stress(tid)) with the allocator as the thread uses it.</summary>
    private struct StressRun<TBlock> : IThreadRun<TBlock>
    {
        public int Tid;
        public TBlock[] Transfer;
        public LiveCounters Live;
        public long Allocations;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Allocations = Stress(ref allocator, Tid, Transfer, ref Live.Of(Tid), out Errors);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Stress<TAlloc, TBlock>(ref TAlloc allocator, int tid, TBlock[] transfer, ref long live, out long errors)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var random = new FastRandom((ulong)(tid + 1) * 43);
        int allocs = AllocationsOf(tid), retain = allocs / 2;
        long made = allocs + retain;
        // The program grows its array 100,000 entries at a time: one step covers the most any thread makes (40,000).
        var data = new TBlock[Math.Max(100_000, allocs)];
        var retained = new TBlock[retain];
        int dataTop = 0, retainTop = 0;
        errors = 0;
        while (allocs > 0 || retain > 0)
        {
            if (retain == 0 || (Chance(50, ref random) && allocs > 0))
            {
                allocs--;
                data[dataTop++] = AllocItems<TAlloc, TBlock>(ref allocator, 1L << random.Below(5), ref random, ref live);
            }
            else
            {
                retained[retainTop++] = AllocItems<TAlloc, TBlock>(ref allocator, 1L << random.Below(7), ref random, ref live);
                retain--;
            }
            if (Chance(66, ref random) && dataTop > 0)
            {
                int index = random.Below(dataTop);
                if (!allocator.IsNull(data[index])) errors += FreeItems(ref allocator, data[index], ref live);
                data[index] = default!;
            }
            if (Chance(25, ref random) && dataTop > 0)
            {
                int index = random.Below(dataTop);
                data[index] = Interlocked.Exchange(ref transfer[random.Below(TransferSlots)], data[index]);
            }
        }
        for (int i = 0; i < retainTop; i++) errors += FreeItems(ref allocator, retained[i], ref live);
        for (int i = 0; i < dataTop; i++)
        {
            if (!allocator.IsNull(data[i])) errors += FreeItems(ref allocator, data[i], ref live);
        }
        return made;
    }

    /// <summary>True with probability (<paramref name="percent"/> + 1) / 100, as the program's chance().</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Chance(int percent, ref FastRandom random) => random.Below(100) <= percent;

    /// <summary>A block of <paramref name="items"/> words (sometimes many more), every word written.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TBlock AllocItems<TAlloc, TBlock>(ref TAlloc allocator, long items, ref FastRandom random, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        if (Chance(1, ref random))
        {
            if (Chance(1, ref random)) items *= 10000;
            else if (Chance(10, ref random)) items *= 1000;
            else items *= 100;
        }
        items = Math.Min(items, MaxWords);
        int bytes = (int)items * sizeof(ulong);
        TBlock block = allocator.Allocate(bytes);
        ref byte data = ref allocator.Data(block);
        for (long i = 0; i < items; i++) Unsafe.WriteUnaligned(ref Unsafe.Add(ref data, (nint)(i * sizeof(ulong))), (ulong)(items - i) ^ Cookie);
        live += bytes;
        return block;
    }

    /// <summary>Checks every word of a block and frees it; 1 when a word was wrong.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FreeItems<TAlloc, TBlock>(ref TAlloc allocator, TBlock block, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        ref byte data = ref allocator.Data(block);
        ulong items = Unsafe.ReadUnaligned<ulong>(ref data) ^ Cookie;
        int bad = items is 0 or > (ulong)MaxWords ? 1 : 0;
        if (bad == 0)
        {
            for (ulong i = 0; i < items; i++)
            {
                if ((Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref data, (nint)(i * sizeof(ulong)))) ^ Cookie) != items - i) bad = 1;
            }
            live -= (long)items * sizeof(ulong);
        }
        allocator.Free(block);
        return bad;
    }
}
