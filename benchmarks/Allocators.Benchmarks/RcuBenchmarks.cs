using System.Numerics;
using System.Runtime.InteropServices;
using Allocators.Mempool;
using Allocators.Physical;
using Allocators.Rcu;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// RCU and mempool costs (ns per operation, 1000 operations per invocation): an rcu_read_lock/unlock pair against the
/// per-processor two-epoch gate the page cache used before (two atomics on a striped counter); kmalloc+kfree_rcu
/// against kmalloc+kfree, one pair at a time and as a batch of 1000 allocations then 1000 frees, the kfree_rcu runs
/// ending with rcu_barrier so that the grace period and the deferred frees are paid inside the measurement; and a
/// kmalloc-backed mempool's alloc+free against the kmalloc pair it wraps.
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class RcuBenchmarks
{
    private const int Ops = 1000;

    private MemorySystem _system = null!;
    private RcuDomain _rcu = null!;
    private SlabAllocator _slab = null!;
    private ReservePool _pool = null!;
    private readonly nint[] _blocks = new nint[Ops];
    private long* _gate;
    private int _stripes;
    private int _epoch = 0; // the gate's epoch bit, read as the page cache's gate read it

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20 } });
        _rcu = _system.Rcu;
        _slab = _system.Slab;
        _pool = ReservePool.CreateKmallocPool(_slab, minNr: 16, size: 64);
        _stripes = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(Environment.ProcessorCount, 1));
        _gate = (long*)NativeMemory.AlignedAlloc((nuint)(2 * _stripes * 64), 64);
        NativeMemory.Clear(_gate, (nuint)(2 * _stripes * 64));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        _system.Dispose();
        NativeMemory.AlignedFree(_gate);
    }

    [Benchmark(OperationsPerInvoke = Ops, Baseline = true)]
    public void StripedGateEnterExit()
    {
        for (int i = 0; i < Ops; i++)
        {
            int slot = ((Volatile.Read(ref _epoch) & 1) * _stripes + (Thread.GetCurrentProcessorId() & (_stripes - 1))) * 8;
            Interlocked.Increment(ref _gate[slot]);
            Interlocked.Decrement(ref _gate[slot]);
        }
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void RcuReadLockUnlock()
    {
        var rcu = _rcu;
        for (int i = 0; i < Ops; i++)
        {
            rcu.RcuReadLock();
            rcu.RcuReadUnlock();
        }
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void KmallocKfreePair()
    {
        var slab = _slab;
        for (int i = 0; i < Ops; i++) slab.Kfree(slab.Kmalloc(64));
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void KmallocKfreeRcuPair()
    {
        var slab = _slab;
        for (int i = 0; i < Ops; i++) slab.KfreeRcu(slab.Kmalloc(64));
        _rcu.RcuBarrier();
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void KmallocKfreeBatch()
    {
        var slab = _slab;
        for (int i = 0; i < Ops; i++) _blocks[i] = (nint)slab.Kmalloc(64);
        for (int i = 0; i < Ops; i++) slab.Kfree((void*)_blocks[i]);
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void KmallocKfreeRcuBatch()
    {
        var slab = _slab;
        for (int i = 0; i < Ops; i++) _blocks[i] = (nint)slab.Kmalloc(64);
        for (int i = 0; i < Ops; i++) slab.KfreeRcu((void*)_blocks[i]);
        _rcu.RcuBarrier();
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void MempoolAllocFree()
    {
        var pool = _pool;
        for (int i = 0; i < Ops; i++) pool.Free(pool.Alloc());
    }
}
