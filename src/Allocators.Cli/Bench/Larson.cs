using System.Runtime.CompilerServices;

namespace Allocators.Cli.Bench;

/// <summary>
/// larson (Larson and Krishnan's server simulation): each thread owns an array of slots holding blocks of random
/// size; it repeatedly frees a random slot's block and puts a new random-size block there, and after a fixed number
/// of replacements it hands its whole array to a newly started thread and exits, so blocks are freed by threads
/// other than the one that allocated them and threads come and go all the time. The arrays are first filled by the
/// main thread. Threads = number of slot arrays (each always served by exactly one live thread).
/// </summary>
internal sealed class Larson : Workload
{
    /// <summary>Smallest block.</summary>
    public const int MinSize = 8;

    /// <summary>Largest block.</summary>
    public const int MaxSize = 1000;

    /// <summary>Slots per array.</summary>
    public const int Slots = 5000;

    /// <summary>Replacements a thread does before it hands its array to a new thread.</summary>
    public const int ReplacementsPerThread = 20_000;

    /// <summary>
    /// Bytes kmalloc hands out per byte larson requests (size-class rounding alone, averaged over the uniform size
    /// range): a floor under the footprint / live ratio that no slab-level improvement can go below.
    /// </summary>
    public static double KmallocRounding()
    {
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new Allocators.Physical.PhysicalMemoryOptions { Size = 8L << 20 } });
        double requested = 0, handedOut = 0;
        for (int size = MinSize; size <= MaxSize; size++)
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
        $"server simulation: {Slots} slots per thread, random sizes {MinSize}..{MaxSize} B, a new thread takes over the slots every {ReplacementsPerThread:N0} replacements; op = free + malloc";

    private sealed class SlotArray<TBlock>(int index, int slots)
    {
        public readonly int Index = index;
        public readonly TBlock[] Blocks = new TBlock[slots];
        public FastRandom Random = new((ulong)index * 7919 + 17);
        public long Operations;
        public long Handoffs;
        public long StampErrors;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int threads = context.Threads;
        var arrays = new SlotArray<TBlock>[threads];
        for (int t = 0; t < threads; t++)
        {
            var array = arrays[t] = new SlotArray<TBlock>(t, Slots);
            ref long live = ref context.Live.Of(t);
            for (int i = 0; i < Slots; i++)
            {
                int size = array.Random.Between(MinSize, MaxSize);
                TBlock block = allocator.Allocate(size);
                Stamp(ref allocator.Data(block), size);
                array.Blocks[i] = block;
                live += size;
            }
        }

        var stop = new StrongBox<bool>();
        using var finished = new CountdownEvent(threads);
        Exception? failure = null;

        void Serve(SlotArray<TBlock> array)
        {
            try
            {
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
        StopAfter(context.Scale.Duration, stop);
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
        var outcome = new WorkloadOutcome { Operations = operations, Elapsed = elapsed, Detail = null };
        outcome.CheckStampsAndLive(stampErrors, context);
        if (outcome.Verified) outcome.Detail = $"{handoffs:N0} thread handoffs";
        return outcome;
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
        while (done < ReplacementsPerThread)
        {
            if (Volatile.Read(ref stop.Value)) { stopped = true; break; }
            for (int i = 0; i < 64; i++)
            {
                int victim = random.Below(blocks.Length);
                TBlock old = blocks[victim];
                int oldSize = ReadStamp(ref allocator.Data(old));
                if (oldSize < 0) stampErrors++;
                else live -= oldSize;
                allocator.Free(old);
                int size = random.Between(MinSize, MaxSize);
                TBlock block = allocator.Allocate(size);
                Stamp(ref allocator.Data(block), size);
                blocks[victim] = block;
                live += size;
            }
            done += 64;
        }
        array.Random = random;
        array.Operations += done;
        array.StampErrors += stampErrors;
        return stopped;
    }
}
