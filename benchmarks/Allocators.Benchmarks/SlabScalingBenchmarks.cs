using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;
using Allocators.Physical;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// Thread scaling of 64-byte alloc+free pairs: one or two worker threads each allocate a batch of 1000 objects and
/// free a batch, 100 rounds per invocation. With <see cref="CrossThreadFree"/> every object is freed by the other
/// thread (the threads swap batches at a barrier each round); without it each thread frees its own. Mean is the wall
/// time per pair of one thread: two threads that scale perfectly show the same Mean as one while doing twice the
/// work, so the throughput gained by the second thread is 2 x Mean(1 thread) / Mean(2 threads) (the target is at least
/// 1.9x on a 2-core machine).
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class SlabScalingBenchmarks
{
    private const int Batch = 1000;
    private const int Rounds = 100;
    private const int Size = 64;

    private MemorySystem _system = null!;
    private KmemCache _cache = null!;
    private NativeAllocatorLibrary? _native;
    private WorkerCrew _crew = null!;
    private SpinPairBarrier _swap = null!;
    private nint[][] _batches = [];
    private nint _sink;

    /// <summary>Who allocates.</summary>
    [ParamsSource(nameof(Contenders))]
    public string Allocator { get; set; } = "";

    /// <summary>The contenders: Allocators' cache and kmalloc, plain and through the thread handle, and the native allocators that loaded.</summary>
    public static IEnumerable<string> Contenders
        => NativeAllocatorColumns.Available([Harness, "kmem_cache", "kmem_cache ThisThread", "kmalloc", "kmalloc ThisThread"]);

    /// <summary>
    /// No allocator: the same rounds with made-up pointers, so the cost of the benchmark itself shows (with
    /// cross-thread frees each batch array's lines move between the cores every round, for every allocator).
    /// </summary>
    public const string Harness = "none (harness only)";

    /// <summary>Worker threads.</summary>
    [Params(1, 2)]
    public int Threads { get; set; }

    /// <summary>True: every object is freed by the other thread (with one thread, by itself).</summary>
    [Params(false, true)]
    public bool CrossThreadFree { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20 } });
        _cache = _system.Slab.CreateCache("scaling-64", Size);
        if (NativeAllocatorColumns.IsNative(Allocator)) _native = NativeAllocatorColumns.Get(Allocator);
        _batches = new nint[Threads][];
        for (int t = 0; t < Threads; t++) _batches[t] = new nint[Batch];
        _swap = new SpinPairBarrier(Threads);
        _crew = new WorkerCrew(Threads, "scaling", id => { for (int r = 0; r < Rounds; r++) Round(id); });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _crew.Dispose();
        _system.Dispose();
    }

    /// <summary>Rounds of batch alloc + batch free on every worker thread; Mean is per pair of one thread.</summary>
    [Benchmark(OperationsPerInvoke = Batch * Rounds)]
    public void Pairs() => _crew.RunOnce();

    private void Round(int id)
    {
        nint[] mine = _batches[id];
        switch (Allocator)
        {
            case "kmem_cache":
                for (int i = 0; i < Batch; i++) mine[i] = (nint)_cache.Alloc();
                foreach (nint p in Swap(id)) _cache.Free((void*)p);
                break;
            case "kmem_cache ThisThread":
                var c = _cache.ThisThread();
                for (int i = 0; i < Batch; i++) mine[i] = (nint)c.Alloc();
                foreach (nint p in Swap(id)) c.Free((void*)p);
                break;
            case "kmalloc":
                for (int i = 0; i < Batch; i++) mine[i] = (nint)_system.Slab.Kmalloc(Size);
                foreach (nint p in Swap(id)) _system.Slab.Kfree((void*)p);
                break;
            case "kmalloc ThisThread":
                var k = _system.Slab.ThisThread();
                for (int i = 0; i < Batch; i++) mine[i] = (nint)k.Kmalloc(Size);
                foreach (nint p in Swap(id)) k.Kfree((void*)p);
                break;
            case Harness:
                for (int i = 0; i < Batch; i++) mine[i] = i * Size;
                nint sum = 0;
                foreach (nint p in Swap(id)) sum += p;
                _sink = sum;
                break;
            default:
                var malloc = _native!.Malloc;
                var free = _native.Free;
                for (int i = 0; i < Batch; i++) mine[i] = (nint)malloc(Size);
                foreach (nint p in Swap(id)) free((void*)p);
                break;
        }
        if (CrossThreadFree) _swap.Wait(); // nobody refills a batch the other thread is still freeing
    }

    /// <summary>The batch this thread frees: the other thread's when freeing across threads (after both filled theirs).</summary>
    private nint[] Swap(int id)
    {
        if (!CrossThreadFree || Threads == 1) return _batches[id];
        _swap.Wait();
        return _batches[1 - id];
    }

    /// <summary>A sense-reversing spin barrier for the worker threads (a no-op for one thread).</summary>
    private sealed class SpinPairBarrier(int participants)
    {
        private int _arrived;
        private int _generation;

        public void Wait()
        {
            if (participants == 1) return;
            int generation = Volatile.Read(ref _generation);
            if (Interlocked.Increment(ref _arrived) == participants)
            {
                _arrived = 0;
                Volatile.Write(ref _generation, generation + 1);
                return;
            }
            var spin = new SpinWait();
            while (Volatile.Read(ref _generation) == generation) spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}
