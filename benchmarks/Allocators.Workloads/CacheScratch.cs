using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>
/// The false-sharing pair from the Hoard benchmarks. Every thread repeatedly allocates a one-byte object, writes it
/// many times and frees it. In cache-thrash that is all (active false sharing: does the allocator hand objects on
/// one cache line to different threads at the same time?). In cache-scratch the main thread first allocates one
/// object per thread, back to back, and each thread starts by freeing the one it was given (passive false sharing:
/// does a freed object go back to the freeing thread's next allocation, although its cache line belongs to
/// neighbours?). Both also run on private per-thread cache lines: the reference with no false sharing.
/// Threads = worker threads.
/// </summary>
/// <remarks>
/// The published runs are mimalloc-bench's (github.com/daanx/mimalloc-bench, bench.sh, tests "cscratch" and "cthrash"):
/// <c>./cache-scratch 1 1000 1 2000000 $procs</c> and <c>./cache-scratch $procs 1000 1 2000000 $procs</c>, the same for
/// cache-thrash, whose arguments bench/cache-scratch/cache-scratch.cpp and bench/cache-thrash/cache-thrash.cpp read as
/// nthreads, iterations 1000, objSize 1, repetitions 2,000,000, concurrency. From those files: each thread makes
/// iterations allocations and writes each object repetitions / nthreads times (every byte written, then read back
/// through a volatile), so the total writing is the same at every thread count; the programs' result is the elapsed
/// time of that fixed work, so one operation here is one write of the object.
/// </remarks>
internal abstract class FalseSharingWorkload : Workload
{
    /// <summary>Object size (objSize).</summary>
    public const int ObjectSize = 1;

    /// <summary>Allocations per thread in the published run (iterations).</summary>
    public const int PublishedIterations = 1000;

    /// <summary>Writes of an object, all threads together (repetitions); each thread writes its objects this / threads times.</summary>
    public const int Repetitions = 2_000_000;

    /// <summary>What the main thread writes into a given object (cache-scratch), checked when the thread frees it.</summary>
    private const byte GivenMark = 0x5A;

    /// <summary>True for cache-scratch (objects handed out by the main thread first).</summary>
    protected abstract bool Scratch { get; }

    /// <inheritdoc/>
    public override bool HasPrivateReference => true;

    /// <inheritdoc/>
    public override string Unit => "writes/s";

    [StructLayout(LayoutKind.Sequential, Size = ObjectSize)]
    private struct OneByte
    {
        public byte Value;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome? RunOnTypedCache(SlabAllocator slab, RunContext context, ThreadHandleCount? handles)
        => RunOnCache<OneByte>(slab, context, handles);

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int threads = context.Threads;
        long iterations = context.Count(PublishedIterations);
        int writes = Repetitions / threads;
        var given = new TBlock[threads];
        if (Scratch)
        {
            for (int t = 0; t < threads; t++)
            {
                given[t] = allocator.Allocate(ObjectSize);
                allocator.Data(given[t]) = GivenMark;
            }
            context.Live.Of(threads) += (long)threads * ObjectSize;
        }
        long errors = 0;
        var clock = Clock();
        RunThreads(threads, t =>
        {
            ref long live = ref context.Live.Of(t);
            if (Scratch)
            {
                if (allocator.Data(given[t]) != GivenMark) Interlocked.Increment(ref errors);
                allocator.Free(given[t]);
                live -= ObjectSize;
            }
            var run = new ExerciseRun<TBlock> { Live = context.Live, Index = t, Iterations = iterations, Writes = writes };
            allocator.OnThisThread(ref run);
            Interlocked.Add(ref errors, run.Errors);
        }, Name);
        var elapsed = clock.Elapsed;
        var outcome = new WorkloadOutcome { Operations = iterations * threads * writes * ObjectSize, Elapsed = elapsed };
        if (errors != 0) outcome.Fail($"{errors} objects did not hold what was written");
        if (context.Live.Sum() != 0) outcome.Fail("live byte count not zero at the end");
        return outcome;
    }

/// <summary>A thread's allocate/write/free loop with the allocator as the thread uses it.</summary>
    private struct ExerciseRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public long Iterations;
        public int Writes;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Errors = Exercise<TAlloc, TBlock>(ref allocator, Iterations, Writes, ref Live.Of(Index));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Exercise<TAlloc, TBlock>(ref TAlloc allocator, long iterations, int writes, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        long errors = 0;
        for (long r = 0; r < iterations; r++)
        {
            TBlock block = allocator.Allocate(ObjectSize);
            live += ObjectSize;
            ref byte data = ref allocator.Data(block);
            // Each write adds one to what it reads back (the programs write a constant and read it back): the same one
            // read and one write per byte, and a second thread writing the same object shows in the count.
            byte before = Volatile.Read(ref Unsafe.Add(ref data, ObjectSize - 1));
            for (int pass = 0; pass < writes; pass++)
            {
                for (int i = 0; i < ObjectSize; i++)
                {
                    ref byte b = ref Unsafe.Add(ref data, i);
                    Volatile.Write(ref b, (byte)(Volatile.Read(ref b) + 1));
                }
            }
            if (Volatile.Read(ref Unsafe.Add(ref data, ObjectSize - 1)) != (byte)(before + writes)) errors++;
            allocator.Free(block);
            live -= ObjectSize;
        }
        return errors;
    }
}

/// <summary>cache-scratch: passive false sharing (see <see cref="FalseSharingWorkload"/>).</summary>
internal sealed class CacheScratch : FalseSharingWorkload
{
    /// <inheritdoc/>
    public override string Name => "cache-scratch";

    /// <inheritdoc/>
    public override string Description =>
        $"passive false sharing (mimalloc-bench: cache-scratch N 1000 1 2000000 N): main allocates one {ObjectSize} B object per thread, each thread frees it, "
        + $"then {PublishedIterations} times allocates an object, writes it {Repetitions:N0} / N times, frees it; --full runs the published count, --quick {BenchScale.Quick.Share}; op = one write";

    /// <inheritdoc/>
    protected override bool Scratch => true;
}

/// <summary>cache-thrash: active false sharing (see <see cref="FalseSharingWorkload"/>).</summary>
internal sealed class CacheThrash : FalseSharingWorkload
{
    /// <inheritdoc/>
    public override string Name => "cache-thrash";

    /// <inheritdoc/>
    public override string Description =>
        $"active false sharing (mimalloc-bench: cache-thrash N 1000 1 2000000 N): each thread {PublishedIterations} times allocates a {ObjectSize} B object, "
        + $"writes it {Repetitions:N0} / N times, frees it; --full runs the published count, --quick {BenchScale.Quick.Share}; op = one write";

    /// <inheritdoc/>
    protected override bool Scratch => false;
}
