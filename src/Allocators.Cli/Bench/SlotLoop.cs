using System.Runtime.CompilerServices;

namespace Allocators.Cli.Bench;

/// <summary>A block-size distribution (a struct, so drawing a size is inlined into the loop).</summary>
internal interface ISizeDistribution
{
    /// <summary>Draws one size (at least 8).</summary>
    int Draw(ref FastRandom random);
}

/// <summary>The random-slot loop shared by glibc-thread and alloc-test.</summary>
internal static class SlotLoop
{
    /// <summary>
    /// Runs the loop on every thread for the mode's duration. Without <paramref name="toggle"/> the slots start full
    /// and every step replaces a block (free + malloc = one op); with it every step frees a full slot or fills an empty one.
    /// </summary>
    public static WorkloadOutcome Run<TAlloc, TBlock, TSizes>(TAlloc allocator, RunContext context, string name, int slots, bool toggle)
        where TAlloc : struct, IBlockAllocator<TBlock>
        where TSizes : struct, ISizeDistribution
    {
        var stop = new StrongBox<bool>();
        var counts = new long[context.Threads * 16];
        long errors = 0;
        var clock = Workload.Clock();
        var runner = new Thread(() => Workload.RunThreads(context.Threads, t =>
        {
            var run = new LoopRun<TBlock, TSizes> { Stop = stop, Slots = slots, Toggle = toggle, Seed = (ulong)t + 1, Live = context.Live, Index = t };
            allocator.OnThisThread(ref run);
            counts[t * 16] = run.Operations;
            Interlocked.Add(ref errors, run.Errors);
        }, name));
        runner.Start();
        Workload.StopAfter(context.Scale.Duration, stop);
        runner.Join();
        var elapsed = clock.Elapsed;
        return new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(counts, context.Threads), Elapsed = elapsed }
            .CheckStampsAndLive(errors, context);
    }

    /// <summary>One thread's loop with the allocator as the thread uses it.</summary>
    private struct LoopRun<TBlock, TSizes> : IThreadRun<TBlock> where TSizes : struct, ISizeDistribution
    {
        public StrongBox<bool> Stop;
        public int Slots;
        public bool Toggle;
        public ulong Seed;
        public LiveCounters Live;
        public int Index;
        public long Operations;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Operations = Loop<TAlloc, TBlock, TSizes>(ref allocator, Stop, Slots, Toggle, Seed, ref Live.Of(Index), out Errors);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Loop<TAlloc, TBlock, TSizes>(ref TAlloc allocator, StrongBox<bool> stop, int slots, bool toggle, ulong seed,
        ref long live, out long errors)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
        where TSizes : struct, ISizeDistribution
    {
        TSizes sizes = default;
        var blocks = new TBlock[slots];
        var random = new FastRandom(seed * 7777);
        long operations = 0;
        errors = 0;
        if (!toggle)
        {
            for (int i = 0; i < slots; i++)
            {
                int size = sizes.Draw(ref random);
                TBlock block = allocator.Allocate(size);
                Workload.Stamp(ref allocator.Data(block), size);
                blocks[i] = block;
                live += size;
            }
        }
        // At least one round per thread: a thread that only got the CPU after the stop still measures something.
        do
        {
            for (int n = 0; n < 64; n++)
            {
                int slot = random.Below(slots);
                TBlock old = blocks[slot];
                if (!allocator.IsNull(old))
                {
                    int oldSize = Workload.ReadStamp(ref allocator.Data(old));
                    if (oldSize < 0) errors++;
                    else live -= oldSize;
                    allocator.Free(old);
                    blocks[slot] = default!;
                    if (toggle) continue;
                }
                int size = sizes.Draw(ref random);
                TBlock block = allocator.Allocate(size);
                Workload.Stamp(ref allocator.Data(block), size);
                blocks[slot] = block;
                live += size;
            }
            operations += 64;
        }
        while (!Volatile.Read(ref stop.Value));
        for (int i = 0; i < slots; i++)
        {
            if (allocator.IsNull(blocks[i])) continue;
            int oldSize = Workload.ReadStamp(ref allocator.Data(blocks[i]));
            if (oldSize < 0) errors++;
            else live -= oldSize;
            allocator.Free(blocks[i]);
        }
        return operations;
    }
}
