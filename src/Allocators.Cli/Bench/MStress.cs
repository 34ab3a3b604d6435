using System.Runtime.CompilerServices;

namespace Allocators.Cli.Bench;

/// <summary>
/// mstress (after the stress test shipped with mimalloc): a server-like mix. Threads allocate blocks of power-of-two
/// sizes (mostly 8 B..1 KiB, sometimes up to 32 KiB, rarely 256 KiB) into their own retained arrays, free random ones,
/// allocate and drop short-lived ones, and swap blocks with a shared transfer array so blocks migrate between
/// threads. Threads have unequal amounts of work. The run has several phases: after each phase all threads exit,
/// about half of each retained array is freed and the rest survives into the next phase, served by new threads.
/// Threads = threads per phase.
/// </summary>
internal sealed class MStress : Workload
{
    /// <summary>Phases (each with fresh threads).</summary>
    public const int Phases = 8;

    /// <summary>Retained slots per thread.</summary>
    public const int RetainedSlots = 1000;

    /// <summary>Slots of the shared transfer array.</summary>
    public const int TransferSlots = 1024;

    /// <summary>Operations of the lightest thread per phase in quick mode (others do 2x or 3x).</summary>
    public const int QuickOperations = 40_000;

    /// <inheritdoc/>
    public override string Name => "mstress";

    /// <inheritdoc/>
    public override string Description =>
        $"{Phases} phases of fresh threads; power-of-two sizes 8 B..256 KiB, retained/transient/migrating blocks, unequal work; op = one malloc, free or swap";

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int threads = context.Threads;
        var retained = new TBlock[threads][];
        for (int t = 0; t < threads; t++) retained[t] = new TBlock[RetainedSlots];
        var transfer = new TBlock[TransferSlots];
        long baseOps = context.Work(QuickOperations);
        var totals = new long[threads * 16];

        var clock = Clock();
        for (int phase = 0; phase < Phases; phase++)
        {
            int p = phase;
            RunThreads(threads, t =>
            {
                var random = new FastRandom((ulong)(p * 1000 + t + 1));
                long ops = baseOps * (1 + (t + p) % 3);
                var run = new WorkRun<TBlock> { Retained = retained[t], Transfer = transfer, Operations = ops, Random = random, Live = context.Live, Index = t };
                allocator.OnThisThread(ref run);
                random = run.Random;
                totals[t * 16] += run.Done;
                // End of phase: about half of the retained blocks survive into the next phase.
                TBlock[] mine = retained[t];
                for (int i = 0; i < mine.Length; i++)
                {
                    if (!allocator.IsNull(mine[i]) && (random.Next() & 1) == 0)
                    {
                        context.Live.Of(t) -= Release(allocator, mine[i]);
                        mine[i] = default!;
                    }
                }
            }, Name);
        }
        var elapsed = clock.Elapsed;

        long errors = 0;
        ref long liveMain = ref context.Live.Of(threads);
        foreach (TBlock[] array in retained.Append(transfer))
        {
            for (int i = 0; i < array.Length; i++)
            {
                if (allocator.IsNull(array[i])) continue;
                long size = Release(allocator, array[i]);
                if (size < 0) errors++;
                else liveMain -= size;
                array[i] = default!;
            }
        }
        return new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(totals, threads), Elapsed = elapsed }
            .CheckStampsAndLive(errors, context);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PickSize(ref FastRandom random)
    {
        ulong r = random.Next();
        int shift;
        if ((r & 0xFFFF) < 7) shift = 18;                       // ~1 in 10000: 256 KiB
        else if ((r & 0xFFFF) < 655) shift = 11 + (int)((r >> 16) % 5); // ~1 %: 2..32 KiB
        else shift = 3 + (int)((r >> 16) % 8);                  // 8 B .. 1 KiB
        return 1 << shift;
    }

    private static long Release<TAlloc, TBlock>(TAlloc allocator, TBlock block) where TAlloc : struct, IBlockAllocator<TBlock>
    {
        int size = ReadStamp(ref allocator.Data(block));
        allocator.Free(block);
        return size;
    }

    /// <summary>One thread's share of a phase with the allocator as the thread uses it.</summary>
    private struct WorkRun<TBlock> : IThreadRun<TBlock>
    {
        public TBlock[] Retained;
        public TBlock[] Transfer;
        public long Operations;
        public FastRandom Random;
        public LiveCounters Live;
        public int Index;
        public long Done;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Done = Work(ref allocator, Retained, Transfer, Operations, ref Random, ref Live.Of(Index));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Work<TAlloc, TBlock>(ref TAlloc allocator, TBlock[] retained, TBlock[] transfer, long operations,
        ref FastRandom random, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        for (long n = 0; n < operations; n++)
        {
            int action = random.Below(100);
            int slot = random.Below(retained.Length);
            if (action < 50)
            {
                // Allocate a retained block (replacing what was there).
                TBlock old = retained[slot];
                if (!allocator.IsNull(old)) live -= ReleaseChecked(ref allocator, old);
                int size = PickSize(ref random);
                TBlock block = allocator.Allocate(size);
                Stamp(ref allocator.Data(block), size);
                retained[slot] = block;
                live += size;
            }
            else if (action < 75)
            {
                TBlock old = retained[slot];
                if (!allocator.IsNull(old))
                {
                    live -= ReleaseChecked(ref allocator, old);
                    retained[slot] = default!;
                }
            }
            else if (action < 85)
            {
                // Migrate: swap with the shared transfer array.
                int other = random.Below(transfer.Length);
                retained[slot] = Interlocked.Exchange(ref transfer[other], retained[slot]);
            }
            else
            {
                // Short-lived block.
                int size = PickSize(ref random);
                TBlock block = allocator.Allocate(size);
                Stamp(ref allocator.Data(block), size);
                live += size;
                live -= ReleaseChecked(ref allocator, block);
            }
        }
        return operations;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ReleaseChecked<TAlloc, TBlock>(ref TAlloc allocator, TBlock block) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        int size = ReadStamp(ref allocator.Data(block));
        if (size < 0) ThrowCorrupted();
        allocator.Free(block);
        return size;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowCorrupted() => throw new InvalidOperationException("mstress: a block's stamp was overwritten.");
}
