using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>
/// xmalloc-test (Lever and Boreham's multithreaded malloc test): producer threads only allocate and consumer threads
/// only free, so every block is freed by a thread other than the one that allocated it. Producers fill batches and push
/// them on one shared list, waiting while it is full; consumers pop a batch and free all of it. Threads = number of
/// producers = number of consumers.
/// </summary>
/// <remarks>
/// The published run is mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, test "xmalloc-test"):
/// <c>./xmalloc-test -w $procs -t 5 -s 64</c>: $procs producers and as many consumers, 5 seconds, 64-byte objects.
/// From bench/xmalloc-test/xmalloc-test.c: OBJECTS_PER_BATCH 4096; batch_count_limit 100 batches on the list, which
/// is last in, first out under one mutex with a "full" and an "empty" condition; each object has its first min(size, 128)
/// bytes written; a consumer frees a batch's objects in order and counts 4096 per batch, and the printed rate is those
/// frees per second. Two differences: a batch record (4096 pointers) is a reused managed array here, where the program
/// mallocs one per batch, so ArrayPool and the GC can run it too (one 32 KiB request per 4096 objects); and a consumer
/// counts only batches it freed (the program also adds 4096 when it wakes at the end with none).
/// </remarks>
internal sealed class XmallocTest : Workload
{
    /// <summary>Published run length (-t 5).</summary>
    public static readonly TimeSpan PublishedDuration = TimeSpan.FromSeconds(5);

    /// <summary>Every object has this size (-s 64), so the typed cache applies.</summary>
    public const int BlockSize = 64;

    /// <summary>Objects per batch (OBJECTS_PER_BATCH).</summary>
    public const int ObjectsPerBatch = 4096;

    /// <summary>Batches the shared list holds before producers wait (batch_count_limit), whatever the thread count.</summary>
    public const int BatchLimit = 100;

    /// <summary>Bytes of an object the producer writes (min(size, 128)).</summary>
    public const int WrittenBytes = BlockSize < 128 ? BlockSize : 128;

    /// <inheritdoc/>
    public override string Name => "xmalloc-test";

    /// <inheritdoc/>
    public override string Description =>
        $"mimalloc-bench xmalloc-test -w N -t 5 -s 64: N producer threads malloc {BlockSize} B objects in batches of {ObjectsPerBatch} on one "
        + $"shared list of at most {BatchLimit} batches, N consumer threads free them; --full runs the published 5 s, --quick {BenchScale.Quick.Share}; op = one object freed";

    [StructLayout(LayoutKind.Sequential, Size = BlockSize)]
    private struct Block64
    {
        public long First;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome? RunOnTypedCache(SlabAllocator slab, RunContext context, ThreadHandleCount? handles)
        => RunOnCache<Block64>(slab, context, handles);

    /// <summary>The shared list of full batches, with the program's waiting rules.</summary>
    private sealed class BatchList<TBlock>
    {
        private readonly Stack<TBlock[]> _full = new();
        private readonly Stack<TBlock[]> _spare = new();
        private bool _done;

        /// <summary>Pushes a full batch, first waiting while the list holds <see cref="BatchLimit"/> and the run goes on.</summary>
        public void Push(TBlock[] batch)
        {
            lock (_full)
            {
                while (_full.Count >= BatchLimit && !_done) Monitor.Wait(_full);
                _full.Push(batch);
                Monitor.PulseAll(_full);
            }
        }

        /// <summary>Pops the newest full batch, waiting while there is none and the run goes on; null when there is none and it is over.</summary>
        public TBlock[]? Pop()
        {
            lock (_full)
            {
                while (_full.Count == 0 && !_done) Monitor.Wait(_full);
                if (!_full.TryPop(out TBlock[]? batch)) return null;
                Monitor.PulseAll(_full);
                return batch;
            }
        }

        /// <summary>An emptied batch record for a producer to fill again, or a new one.</summary>
        public TBlock[] Spare()
        {
            lock (_spare) return _spare.TryPop(out TBlock[]? batch) ? batch : new TBlock[ObjectsPerBatch];
        }

        /// <summary>Keeps an emptied batch record.</summary>
        public void Recycle(TBlock[] batch)
        {
            lock (_spare) _spare.Push(batch);
        }

        /// <summary>Ends the run: every waiting thread wakes and returns.</summary>
        public void Finish()
        {
            lock (_full)
            {
                _done = true;
                Monitor.PulseAll(_full);
            }
        }

        /// <summary>True once <see cref="Finish"/> ran.</summary>
        public bool Done => Volatile.Read(ref _done);

        /// <summary>The batches left on the list (after every thread has stopped).</summary>
        public IEnumerable<TBlock[]> Left() => _full;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int producers = context.Threads;
        var list = new BatchList<TBlock>();
        var freed = new long[producers * 16];
        long stampErrors = 0;
        using var started = new CountdownEvent(producers * 2);

        var clock = Clock();
        var runner = new Thread(() => RunThreads(producers * 2, index =>
        {
            started.Signal();
            if (index < producers)
            {
                var produce = new ProduceRun<TBlock> { Live = context.Live, Index = index, List = list };
                allocator.OnThisThread(ref produce);
            }
            else
            {
                int c = index - producers;
                var consume = new ConsumeRun<TBlock> { Live = context.Live, Index = index, List = list };
                allocator.OnThisThread(ref consume);
                freed[c * 16] = consume.Count;
                Interlocked.Add(ref stampErrors, consume.Errors);
            }
        }, "xmalloc"));
        runner.Start();
        // The run lasts its duration from when every thread is running: a short run must not end before they start.
        started.Wait();
        Thread.Sleep(context.Duration(PublishedDuration));
        list.Finish();
        runner.Join();
        var elapsed = clock.Elapsed;

        // The program's main frees what is left on the list after the threads have stopped (not counted).
        ref long mainLive = ref context.Live.Of(producers * 2);
        foreach (TBlock[] batch in list.Left())
        {
            foreach (TBlock block in batch)
            {
                if (ReadStamp(ref allocator.Data(block)) != BlockSize) stampErrors++;
                allocator.Free(block);
            }
            mainLive -= (long)ObjectsPerBatch * BlockSize;
        }
        var outcome = new WorkloadOutcome { Operations = WorkloadOutcome.SumPadded(freed, producers), Elapsed = elapsed };
        return outcome.CheckStampsAndLive(stampErrors, context);
    }

    /// <summary>A producer thread's loop with the allocator as the thread uses it.</summary>
    private struct ProduceRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public BatchList<TBlock> List;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Produce(ref allocator, ref Live.Of(Index), List);
    }

    /// <summary>A consumer thread's loop with the allocator as the thread uses it.</summary>
    private struct ConsumeRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public BatchList<TBlock> List;
        public long Errors;
        public long Count;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Errors = Consume(ref allocator, ref Live.Of(Index), List, out Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Produce<TAlloc, TBlock>(ref TAlloc allocator, ref long live, BatchList<TBlock> list)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        while (!list.Done)
        {
            TBlock[] batch = list.Spare();
            for (int i = 0; i < batch.Length; i++)
            {
                TBlock block = allocator.Allocate(BlockSize);
                ref byte data = ref allocator.Data(block);
                // The program writes every object's first min(size, 128) bytes; the first 8 carry the stamp here.
                Unsafe.InitBlockUnaligned(ref Unsafe.Add(ref data, 8), (byte)i, WrittenBytes - 8);
                Stamp(ref data, BlockSize);
                batch[i] = block;
            }
            live += (long)ObjectsPerBatch * BlockSize;
            // As in the program, a batch finished after the end is still pushed: the main thread frees it.
            list.Push(batch);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Consume<TAlloc, TBlock>(ref TAlloc allocator, ref long live, BatchList<TBlock> list, out long count)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        long errors = 0;
        count = 0;
        // As in the program: the stop is checked before each pop, and a pop that finds a batch after it still frees it.
        while (!list.Done)
        {
            if (list.Pop() is not { } batch) break;
            for (int i = 0; i < batch.Length; i++)
            {
                TBlock block = batch[i];
                if (ReadStamp(ref allocator.Data(block)) != BlockSize) errors++;
                allocator.Free(block);
            }
            Array.Clear(batch);
            live -= (long)ObjectsPerBatch * BlockSize;
            count += ObjectsPerBatch;
            list.Recycle(batch);
        }
        return errors;
    }
}
