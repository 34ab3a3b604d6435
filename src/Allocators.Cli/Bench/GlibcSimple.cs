using System.Runtime.CompilerServices;

namespace Allocators.Cli.Bench;

/// <summary>
/// glibc-simple (after glibc's bench-malloc-simple): a tight single-threaded loop that allocates a batch of blocks of
/// one size and then frees the whole batch, over several batch lengths and sizes. With more than one thread every
/// thread runs the same loop on its own (no sharing). Threads = independent threads.
/// </summary>
internal sealed class GlibcSimple : Workload
{
    private static readonly int[] Sizes = [16, 64, 256, 1024];
    private static readonly int[] BatchLengths = [25, 100, 400];

    /// <inheritdoc/>
    public override string Name => "glibc-simple";

    /// <inheritdoc/>
    public override string Description =>
        $"tight loop: malloc a batch of {string.Join('/', BatchLengths)} blocks of {string.Join('/', Sizes)} B, then free the batch; op = malloc + free";

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        var stop = new StrongBox<bool>();
        var counts = new long[context.Threads * 16];
        long errors = 0;
        var clock = Clock();
        var runner = new Thread(() => RunThreads(context.Threads, t =>
        {
            var run = new LoopRun<TBlock> { Stop = stop, Live = context.Live, Index = t };
            allocator.OnThisThread(ref run);
            counts[t * 16] = run.Operations;
            Interlocked.Add(ref errors, run.Errors);
        }, Name));
        runner.Start();
        StopAfter(context.Scale.Duration, stop);
        runner.Join();
        var elapsed = clock.Elapsed;
        return new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(counts, context.Threads), Elapsed = elapsed }
            .CheckStampsAndLive(errors, context);
    }

    /// <summary>One thread's loop with the allocator as the thread uses it.</summary>
    private struct LoopRun<TBlock> : IThreadRun<TBlock>
    {
        public StrongBox<bool> Stop;
        public LiveCounters Live;
        public int Index;
        public long Operations;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Operations = Loop<TAlloc, TBlock>(ref allocator, Stop, ref Live.Of(Index), out Errors);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Loop<TAlloc, TBlock>(ref TAlloc allocator, StrongBox<bool> stop, ref long live, out long errors)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var batch = new TBlock[400];
        long operations = 0;
        errors = 0;
        while (!Volatile.Read(ref stop.Value))
        {
            foreach (int size in Sizes)
            {
                foreach (int length in BatchLengths)
                {
                    for (int i = 0; i < length; i++)
                    {
                        TBlock block = allocator.Allocate(size);
                        Stamp(ref allocator.Data(block), size);
                        batch[i] = block;
                    }
                    live += (long)length * size;
                    for (int i = 0; i < length; i++)
                    {
                        TBlock block = batch[i];
                        if (ReadStamp(ref allocator.Data(block)) != size) errors++;
                        allocator.Free(block);
                    }
                    live -= (long)length * size;
                    operations += length;
                }
            }
        }
        Array.Clear(batch);
        return operations;
    }
}
