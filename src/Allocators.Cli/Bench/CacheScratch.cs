using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Slab;

namespace Allocators.Cli.Bench;

/// <summary>
/// The false-sharing pair from the Hoard benchmarks. Every thread repeatedly allocates a small object, writes it
/// many times and frees it. In cache-thrash that is all (active false sharing: does the allocator hand objects on
/// one cache line to different threads at the same time?). In cache-scratch the main thread first allocates one
/// object per thread, back to back, and each thread starts by freeing the one it was given (passive false sharing:
/// does a freed object go back to the freeing thread's next allocation, although its cache line belongs to
/// neighbours?). Both also run on private per-thread cache lines: the reference with no false sharing.
/// Threads = worker threads.
/// </summary>
internal abstract class FalseSharingWorkload : Workload
{
    /// <summary>Object size (as in the original benchmarks' small-object runs).</summary>
    public const int ObjectSize = 8;

    /// <summary>Passes over the object's bytes per allocation.</summary>
    public const int WritePasses = 250;

    /// <summary>Allocate/write/free repetitions per thread in quick mode.</summary>
    public const int QuickRepetitions = 25_000;

    /// <summary>True for cache-scratch (objects handed out by the main thread first).</summary>
    protected abstract bool Scratch { get; }

    /// <inheritdoc/>
    public override bool HasPrivateReference => true;

    /// <inheritdoc/>
    public override string Unit => "allocs/s";

    [StructLayout(LayoutKind.Sequential, Size = ObjectSize)]
    private struct Bytes8
    {
        public long Value;
    }

    /// <inheritdoc/>
    public override WorkloadOutcome? RunOnTypedCache(SlabAllocator slab, RunContext context) => RunOnCache<Bytes8>(slab, context);

    /// <inheritdoc/>
    public override WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
    {
        int threads = context.Threads;
        long repetitions = context.Work(QuickRepetitions);
        var given = new TBlock[threads];
        if (Scratch)
        {
            for (int t = 0; t < threads; t++)
            {
                given[t] = allocator.Allocate(ObjectSize);
                Stamp(ref allocator.Data(given[t]), ObjectSize);
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
                if (ReadStamp(ref allocator.Data(given[t])) != ObjectSize) Interlocked.Increment(ref errors);
                allocator.Free(given[t]);
                live -= ObjectSize;
            }
            var run = new ExerciseRun<TBlock> { Live = context.Live, Index = t, Repetitions = repetitions };
            allocator.OnThisThread(ref run);
            Interlocked.Add(ref errors, run.Errors);
        }, Name);
        var elapsed = clock.Elapsed;
        var outcome = new WorkloadOutcome { Operations = repetitions * threads, Elapsed = elapsed };
        if (errors != 0) outcome.Fail($"{errors} objects did not hold what was written");
        if (context.Live.Sum() != 0) outcome.Fail("live byte count not zero at the end");
        return outcome;
    }

    /// <summary>A thread's allocate/write/free loop with the allocator as the thread uses it.</summary>
    private struct ExerciseRun<TBlock> : IThreadRun<TBlock>
    {
        public LiveCounters Live;
        public int Index;
        public long Repetitions;
        public long Errors;

        public void Run<TAlloc>(ref TAlloc allocator) where TAlloc : IBlockAllocator<TBlock>, allows ref struct
            => Errors = Exercise<TAlloc, TBlock>(ref allocator, Repetitions, ref Live.Of(Index));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long Exercise<TAlloc, TBlock>(ref TAlloc allocator, long repetitions, ref long live)
        where TAlloc : IBlockAllocator<TBlock>, allows ref struct
    {
        long errors = 0;
        for (long r = 0; r < repetitions; r++)
        {
            TBlock block = allocator.Allocate(ObjectSize);
            live += ObjectSize;
            ref byte data = ref allocator.Data(block);
            byte before = Volatile.Read(ref Unsafe.Add(ref data, ObjectSize - 1));
            for (int pass = 0; pass < WritePasses; pass++)
            {
                for (int i = 0; i < ObjectSize; i++)
                {
                    ref byte b = ref Unsafe.Add(ref data, i);
                    Volatile.Write(ref b, (byte)(Volatile.Read(ref b) + 1));
                }
            }
            // Another thread writing the same object (an allocator handing it out twice) would show here.
            if (Volatile.Read(ref Unsafe.Add(ref data, ObjectSize - 1)) != (byte)(before + WritePasses)) errors++;
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
        $"passive false sharing: main allocates one {ObjectSize} B object per thread, each thread frees it, then allocates/writes {WritePasses}x/frees; op = one allocation";

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
        $"active false sharing: each thread allocates a {ObjectSize} B object, writes it {WritePasses}x, frees it; op = one allocation";

    /// <inheritdoc/>
    protected override bool Scratch => false;
}
