namespace Allocators.Percpu;

/// <summary>
/// A counter with per-CPU deltas folded into a shared total every <see cref="Batch"/> units (percpu_counter):
/// updates touch only the current CPU's slot, <see cref="Read"/> is cheap and approximate, <see cref="Sum"/> is exact
/// once updates have stopped.
/// </summary>
/// <remarks>Thread-safe. A thread may migrate between reading its CPU and updating, so the slot update is atomic
/// (uncontended: each CPU has its own slot a unit apart, no false sharing).</remarks>
public sealed unsafe class PercpuCounter : IDisposable
{
    private readonly Percpu<long> _deltas;
    private readonly Lock _lock = new();
    private long _count;

    /// <summary>Creates a counter on <paramref name="percpu"/> starting at <paramref name="initial"/>.</summary>
    public PercpuCounter(PercpuAllocator percpu, long initial = 0, int batch = 32)
    {
        ArgumentNullException.ThrowIfNull(percpu);
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        _deltas = percpu.AllocPercpu<long>();
        _count = initial;
        Batch = batch;
    }

    /// <summary>How far a CPU's delta may drift before it is folded into the total.</summary>
    public int Batch { get; }

    /// <summary>Adds <paramref name="amount"/> (percpu_counter_add_batch).</summary>
    public void Add(long amount)
    {
        ref long slot = ref _deltas.ThisCpu;
        long value = Interlocked.Add(ref slot, amount);
        if (value >= Batch || value <= -Batch) Fold(ref slot);
    }

    /// <summary>Adds one.</summary>
    public void Increment() => Add(1);

    /// <summary>Subtracts one.</summary>
    public void Decrement() => Add(-1);

    private void Fold(ref long slot)
    {
        lock (_lock)
        {
            long taken = Interlocked.Exchange(ref slot, 0);
            _count += taken;
        }
    }

    /// <summary>The shared total without the per-CPU deltas: cheap, off by at most Batch per CPU (percpu_counter_read).</summary>
    public long Read() => Volatile.Read(ref _count);

    /// <summary>The exact value: the total plus every CPU's delta (percpu_counter_sum).</summary>
    public long Sum()
    {
        lock (_lock)
        {
            long sum = _count;
            _deltas.ForEachPossibleCpu((int _, ref long d) => sum += Volatile.Read(ref d));
            return sum;
        }
    }

    /// <summary>Frees the per-CPU deltas.</summary>
    public void Dispose() => _deltas.Free();
}
