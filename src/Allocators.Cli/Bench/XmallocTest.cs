using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Slab;

namespace Allocators.Cli.Bench;

/// <summary>
/// xmalloc-test (after Lever and Boreham's multithreaded malloc test): producer threads only allocate and consumer
/// threads only free, so every block is freed by a thread other than the one that allocated it. Producers hand
/// blocks over in batches through a bounded shared queue. Threads = number of producers = number of consumers.
/// </summary>
internal sealed class XmallocTest : Workload
{
    /// <summary>Every block has this size (so the typed cache applies).</summary>
    public const int BlockSize = 64;

    /// <summary>Blocks per hand-over batch.</summary>
    public const int BatchSize = 100;

    /// <summary>Batches that may wait in the queue per producer before producers pause.</summary>
    public const int QueueDepthPerProducer = 64;

    /// <inheritdoc/>
    public override string Name => "xmalloc-test";

    /// <inheritdoc/>
    public override string Description =>
        $"N producer threads malloc {BlockSize} B blocks, N consumer threads free them (batches of {BatchSize} via a shared queue); op = malloc + remote free";

    [StructLayout(LayoutKind.Sequential, Size = BlockSize)]
    private struct Block64
    {
        public long First;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome? RunOnTypedCache(SlabAllocator slab, RunContext context) => RunOnCache<Block64>(slab, context);

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int producers = context.Threads;
        int capacity = QueueDepthPerProducer * producers;
        var full = new ConcurrentQueue<TBlock[]>();
        var empty = new ConcurrentQueue<TBlock[]>();
        var queued = new StrongBox<int>();
        var stop = new StrongBox<bool>();
        var producersDone = new StrongBox<int>();
        var freed = new long[producers * 16];
        long stampErrors = 0;

        var clock = Clock();
        var runner = new Thread(() => RunThreads(producers * 2, index =>
        {
            if (index < producers)
            {
                var produce = new ProduceRun<TBlock> { Live = context.Live, Index = index, Full = full, Empty = empty, Queued = queued, Capacity = capacity, Stop = stop };
                allocator.OnThisThread(ref produce);
                Interlocked.Increment(ref producersDone.Value);
            }
            else
            {
                int c = index - producers;
                var consume = new ConsumeRun<TBlock> { Live = context.Live, Index = producers + c, Full = full, Empty = empty, Queued = queued, ProducersDone = producersDone, Producers = producers };
                allocator.OnThisThread(ref consume);
                long errors = consume.Errors, count = consume.Count;
                freed[c * 16] = count;
                Interlocked.Add(ref stampErrors, errors);
            }
        }, "xmalloc"));
        runner.Start();
        StopAfter(context.Scale.Duration, stop);
        runner.Join();
        var elapsed = clock.Elapsed;

        long operations = 0;
        for (int c = 0; c < producers; c++) operations += freed[c * 16];
        var outcome = new WorkloadOutcome { Operations = operations, Elapsed = elapsed };
        if (!full.IsEmpty) outcome.Fail("batches left in the queue");
        if (stampErrors != 0) outcome.Fail($"{stampErrors} blocks had a corrupted stamp");
        long left = context.Live.Sum();
        if (left != 0) outcome.Fail($"live byte count is {left} after the consumers drained the queue");
        return outcome;
    }

    /// <summary>A producer thread's loop with the allocator as the thread uses it.</summary>
    private struct ProduceRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public ConcurrentQueue<TBlock[]> Full;
        public ConcurrentQueue<TBlock[]> Empty;
        public StrongBox<int> Queued;
        public int Capacity;
        public StrongBox<bool> Stop;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Produce(ref allocator, ref Live.Of(Index), Full, Empty, Queued, Capacity, Stop);
    }

    /// <summary>A consumer thread's loop with the allocator as the thread uses it.</summary>
    private struct ConsumeRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public ConcurrentQueue<TBlock[]> Full;
        public ConcurrentQueue<TBlock[]> Empty;
        public StrongBox<int> Queued;
        public StrongBox<int> ProducersDone;
        public int Producers;
        public long Errors;
        public long Count;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Errors = Consume(ref allocator, ref Live.Of(Index), Full, Empty, Queued, ProducersDone, Producers, out Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Produce<TAlloc, TBlock>(ref TAlloc allocator, ref long live, ConcurrentQueue<TBlock[]> full,
        ConcurrentQueue<TBlock[]> empty, StrongBox<int> queued, int capacity, StrongBox<bool> stop)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var spin = new SpinWait();
        while (!Volatile.Read(ref stop.Value))
        {
            if (Volatile.Read(ref queued.Value) >= capacity)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }
            spin.Reset();
            if (!empty.TryDequeue(out TBlock[]? batch)) batch = new TBlock[BatchSize];
            for (int i = 0; i < batch.Length; i++)
            {
                TBlock block = allocator.Allocate(BlockSize);
                Stamp(ref allocator.Data(block), BlockSize);
                batch[i] = block;
            }
            live += BatchSize * BlockSize;
            full.Enqueue(batch);
            Interlocked.Increment(ref queued.Value);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Consume<TAlloc, TBlock>(ref TAlloc allocator, ref long live, ConcurrentQueue<TBlock[]> full,
        ConcurrentQueue<TBlock[]> empty, StrongBox<int> queued, StrongBox<int> producersDone, int producers, out long count)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        var spin = new SpinWait();
        long errors = 0;
        count = 0;
        while (true)
        {
            if (!full.TryDequeue(out TBlock[]? batch))
            {
                if (Volatile.Read(ref producersDone.Value) == producers && full.IsEmpty) break;
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }
            spin.Reset();
            Interlocked.Decrement(ref queued.Value);
            for (int i = 0; i < batch.Length; i++)
            {
                TBlock block = batch[i];
                if (ReadStamp(ref allocator.Data(block)) != BlockSize) errors++;
                allocator.Free(block);
            }
            Array.Clear(batch);
            live -= BatchSize * BlockSize;
            count += BatchSize;
            empty.Enqueue(batch);
        }
        return errors;
    }
}
