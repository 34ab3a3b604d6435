using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using Allocators.Buffers;
using Allocators.PageAlloc;
using Allocators.Percpu;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Cli.Workloads;

/// <summary>What <c>allocators stress</c> found: throughput per layer and the final audit.</summary>
internal sealed record StressReport(
    int Threads,
    double Seconds,
    long Operations,
    double OperationsPerSecond,
    IReadOnlyList<LayerStats> Layers,
    long StampErrors,
    long PercpuCounterExpected,
    long PercpuCounterSum,
    long PoolBuffersRentedAfter,
    long SlabObjectsActiveAfter,
    long CorruptionsReported,
    string InitialBuddyInfo,
    string FinalBuddyInfo,
    bool FreeListsRestored,
    bool Passed,
    IReadOnlyList<string> AuditFailures);

/// <summary>Allocations and frees of one layer.</summary>
internal sealed record LayerStats(string Layer, long Allocated, long Freed, long CrossThreadFrees, long Failures, long StampErrors);

/// <summary>A typed slab object of the stress workload.</summary>
internal struct StressObject
{
    public long Stamp;
    public long Check;
    public long Owner;
    public long Payload;
}

/// <summary>
/// A mixed multi-threaded workload over every layer of one memory system — page blocks, kmalloc (small and large),
/// a typed <see cref="KmemCache{T}"/>, per-CPU areas and a <see cref="PercpuCounter"/>, and a
/// <see cref="NativeMemoryPool"/> — with half of all frees done by another thread. Every object carries a stamp that is
/// checked when it is freed. <see cref="Audit"/> then checks that every object is accounted for and that the free
/// lists are exactly as at the start.
/// </summary>
internal sealed unsafe class StressWorkload : IDisposable
{
    private enum Kind { Pages, Kmalloc, Typed, Pool, Percpu }

    private static readonly string[] KindNames = ["pages", "kmalloc", "kmem_cache<T>", "memory-pool", "percpu"];
    private const int Kinds = 5;

    private readonly record struct Item(Kind Kind, nint Pointer, int Size, long Stamp, IMemoryOwner<byte>? Owner);

    private readonly MemorySystem _system;
    private readonly int _threads;
    private readonly TimeSpan _duration;
    private readonly int _seed;
    private readonly KmemCache<StressObject> _typed;
    private readonly PercpuCounter _counter;
    private readonly NativeMemoryPool _pool;
    private const int MaxPercpuArea = 256;
    private readonly int _percpuBudget;
    private readonly int _initialChunks;
    private readonly long[] _allocated = new long[Kinds];
    private readonly long[] _freed = new long[Kinds];
    private readonly long[] _crossFreed = new long[Kinds];
    private readonly long[] _failures = new long[Kinds];
    private readonly long[] _stampErrorsByKind = new long[Kinds];
    private long _operations;
    private long _stampErrors;
    private long _counterExpected;
    private int _percpuLive;
    private bool _disposed;

    public StressWorkload(MemorySystem system, int threads, TimeSpan duration, int seed)
    {
        _system = system;
        _threads = threads;
        _duration = duration;
        _seed = seed;
        _typed = system.Slab.CreateCache<StressObject>("stress-object");
        _counter = new PercpuCounter(system.Percpu);
        _pool = new NativeMemoryPool(system.Slab);
        // Keep every live per-CPU area inside the counter's chunk: the allocator keeps one empty chunk cached, so a second
        // chunk would outlive the run. With areas of at most 256 bytes placed first-fit, N live areas always fit a unit
        // when (2N + 1) * 256 <= unit size; the counter is one of them.
        _percpuBudget = Math.Max(0, (system.Percpu.UnitSize / MaxPercpuArea - 1) / 2 - 2);
        _initialChunks = system.Percpu.ChunkCount;
        system.Pages.DrainAllPages();
        InitialBuddyInfo = system.Pages.BuddyInfo();
    }

    /// <summary>/proc/buddyinfo when the workload was set up.</summary>
    public string InitialBuddyInfo { get; }

    /// <summary>Operations so far (allocations and frees).</summary>
    public long Operations => Interlocked.Read(ref _operations);

    /// <summary>Stamp mismatches found so far.</summary>
    public long StampErrors => Interlocked.Read(ref _stampErrors);

    public TimeSpan Duration => _duration;

    /// <summary>Runs the workers for the duration and frees everything that is still live.</summary>
    public void Run()
    {
        var handoff = new ConcurrentQueue<Item>[_threads];
        for (int i = 0; i < _threads; i++) handoff[i] = new();
        var clock = Stopwatch.StartNew();
        var workers = new Thread[_threads];
        for (int t = 0; t < _threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() => Worker(id, handoff, clock)) { IsBackground = true, Name = $"stress-{id}" };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        foreach (var queue in handoff)
        {
            while (queue.TryDequeue(out var item)) Free(item, crossThread: true);
        }
    }

    private void Worker(int id, ConcurrentQueue<Item>[] handoff, Stopwatch clock)
    {
        var random = new Random(_seed * 7919 + id);
        var live = new List<Item>();
        var liveByKind = new int[Kinds];
        long sequence = 0, ops = 0, counted = 0;
        var next = handoff[(id + 1) % handoff.Length];
        while (clock.Elapsed < _duration)
        {
            for (int i = 0; i < 128; i++)
            {
                while (handoff[id].TryDequeue(out var given))
                {
                    Free(given, crossThread: true);
                    ops++;
                }
                _counter.Increment();
                counted++;
                if (live.Count < 192 && (live.Count == 0 || random.Next(100) < 52))
                {
                    Kind kind = random.Next(100) switch { < 15 => Kind.Pages, < 50 => Kind.Kmalloc, < 75 => Kind.Typed, < 93 => Kind.Pool, _ => Kind.Percpu };
                    if (kind == Kind.Percpu && !TryReservePercpu()) kind = Kind.Typed;
                    if (kind == Kind.Pages && liveByKind[(int)Kind.Pages] >= 24) kind = Kind.Kmalloc;
                    long stamp = ((long)(id + 1) << 48) | ++sequence;
                    if (Alloc(kind, stamp, random) is { } item)
                    {
                        live.Add(item);
                        liveByKind[(int)kind]++;
                    }
                }
                else if (live.Count > 0)
                {
                    int index = random.Next(live.Count);
                    Item item = live[index];
                    live[index] = live[^1];
                    live.RemoveAt(live.Count - 1);
                    liveByKind[(int)item.Kind]--;
                    if (random.Next(2) == 0) next.Enqueue(item);
                    else Free(item, crossThread: false);
                }
                ops++;
            }
            Interlocked.Add(ref _operations, ops);
            ops = 0;
        }
        foreach (var item in live) Free(item, crossThread: false);
        Interlocked.Add(ref _operations, ops + live.Count);
        Interlocked.Add(ref _counterExpected, counted);
    }

    /// <summary>Counts a live per-CPU area against the budget (areas waiting in a hand-off queue are live too).</summary>
    private bool TryReservePercpu()
    {
        if (Interlocked.Increment(ref _percpuLive) <= _percpuBudget) return true;
        Interlocked.Decrement(ref _percpuLive);
        return false;
    }

    private Item? Alloc(Kind kind, long stamp, Random random)
    {
        Item? item = null;
        switch (kind)
        {
            case Kind.Pages:
            {
                int order = random.Next(100) switch { < 60 => 0, < 80 => 1, < 90 => 2, < 97 => 3, _ => 5 };
                PageFrame* page = _system.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, order);
                if (page == null) break;
                byte* bytes = _system.Pages.PageAddress(page);
                *(long*)bytes = stamp;
                *(long*)(bytes + (PageFrame.PageSize << order) - 8) = ~stamp;
                item = new Item(kind, (nint)page, order, stamp, null);
                break;
            }
            case Kind.Kmalloc:
            {
                int size = random.Next(100) < 4 ? random.Next(8193, 64 << 10) : random.Next(8, 2049);
                byte* p = (byte*)_system.Slab.Kmalloc((nuint)size, Gfp.Kernel | Gfp.NoWarn);
                if (p == null) break;
                *(long*)p = stamp;
                if (size >= 16) *(long*)(p + size - 8) = ~stamp;
                item = new Item(kind, (nint)p, size, stamp, null);
                break;
            }
            case Kind.Typed:
            {
                StressObject* o = _typed.TryAlloc(Gfp.Kernel | Gfp.NoWarn);
                if (o == null) break;
                o->Stamp = stamp;
                o->Check = ~stamp;
                o->Owner = stamp >> 48;
                o->Payload = stamp * 31;
                item = new Item(kind, (nint)o, sizeof(StressObject), stamp, null);
                break;
            }
            case Kind.Pool:
            {
                IMemoryOwner<byte> owner;
                try
                {
                    owner = _pool.Rent(random.Next(8, 16385));
                }
                catch (OutOfMemoryException)
                {
                    break;
                }
                Span<byte> span = owner.Memory.Span;
                BitConverter.TryWriteBytes(span, stamp);
                if (span.Length >= 16) BitConverter.TryWriteBytes(span[^8..], ~stamp);
                item = new Item(kind, 0, span.Length, stamp, owner);
                break;
            }
            case Kind.Percpu:
            {
                int size = random.Next(8, MaxPercpuArea + 1);
                nint p = _system.Percpu.AllocPercpu(size);
                if (p == 0)
                {
                    Interlocked.Decrement(ref _percpuLive);
                    break;
                }
                var percpu = _system.Percpu;
                for (int cpu = 0; cpu < percpu.PossibleCpus; cpu++) *(long*)percpu.PerCpuPtr(p, cpu) = stamp + cpu;
                item = new Item(kind, p, size, stamp, null);
                break;
            }
        }
        if (item is null) Interlocked.Increment(ref _failures[(int)kind]);
        else Interlocked.Increment(ref _allocated[(int)kind]);
        return item;
    }

    private void Free(Item item, bool crossThread)
    {
        bool ok;
        switch (item.Kind)
        {
            case Kind.Pages:
            {
                var page = (PageFrame*)item.Pointer;
                byte* bytes = _system.Pages.PageAddress(page);
                ok = *(long*)bytes == item.Stamp && *(long*)(bytes + (PageFrame.PageSize << item.Size) - 8) == ~item.Stamp;
                _system.Pages.FreePages(page, item.Size);
                break;
            }
            case Kind.Kmalloc:
            {
                byte* p = (byte*)item.Pointer;
                ok = *(long*)p == item.Stamp && (item.Size < 16 || *(long*)(p + item.Size - 8) == ~item.Stamp);
                _system.Slab.Kfree(p);
                break;
            }
            case Kind.Typed:
            {
                var o = (StressObject*)item.Pointer;
                ok = o->Stamp == item.Stamp && o->Check == ~item.Stamp && o->Owner == item.Stamp >> 48 && o->Payload == item.Stamp * 31;
                _typed.Free(o);
                break;
            }
            case Kind.Pool:
            {
                Span<byte> span = item.Owner!.Memory.Span;
                ok = BitConverter.ToInt64(span) == item.Stamp && (span.Length < 16 || BitConverter.ToInt64(span[^8..]) == ~item.Stamp);
                item.Owner.Dispose();
                break;
            }
            default:
            {
                var percpu = _system.Percpu;
                ok = true;
                for (int cpu = 0; cpu < percpu.PossibleCpus; cpu++) ok &= *(long*)percpu.PerCpuPtr(item.Pointer, cpu) == item.Stamp + cpu;
                percpu.FreePercpu(item.Pointer);
                Interlocked.Decrement(ref _percpuLive);
                break;
            }
        }
        if (!ok)
        {
            Interlocked.Increment(ref _stampErrors);
            Interlocked.Increment(ref _stampErrorsByKind[(int)item.Kind]);
        }
        Interlocked.Increment(ref _freed[(int)item.Kind]);
        if (crossThread) Interlocked.Increment(ref _crossFreed[(int)item.Kind]);
    }

    /// <summary>
    /// The final audit, after <see cref="Run"/>: every allocation freed once, stamps intact, the per-CPU counter
    /// exact, nothing rented from the pool, no live slab object after shrinking, no corruption reported, and — after
    /// ShrinkAll and DrainAllPages — /proc/buddyinfo identical to the start.
    /// </summary>
    public StressReport Audit(double seconds)
    {
        var failures = new List<string>();
        var layers = new List<LayerStats>();
        for (int k = 0; k < Kinds; k++)
        {
            layers.Add(new LayerStats(KindNames[k], _allocated[k], _freed[k], _crossFreed[k], _failures[k], _stampErrorsByKind[k]));
            if (_allocated[k] != _freed[k]) failures.Add($"{KindNames[k]}: {_allocated[k]} allocated but {_freed[k]} freed");
        }
        if (StampErrors != 0) failures.Add($"{StampErrors} object(s) had a damaged stamp when freed");
        long counterSum = _counter.Sum();
        if (counterSum != _counterExpected) failures.Add($"per-CPU counter sums to {counterSum}, expected {_counterExpected}");
        if (_pool.RentedBuffers != 0 || _pool.RentedBytes != 0)
            failures.Add($"memory pool still has {_pool.RentedBuffers} buffer(s) / {_pool.RentedBytes} bytes rented");
        // The pool keeps returned buffers for reuse; they go back to the slab and page allocators before the audit.
        _pool.Trim();

        if (_system.Percpu.ChunkCount != _initialChunks)
            failures.Add($"the per-CPU allocator has {_system.Percpu.ChunkCount} chunk(s), {_initialChunks} at the start "
                + $"(unit {_system.Percpu.UnitSize} bytes, {_system.Percpu.PossibleCpus} CPUs, at most {_percpuBudget} live areas)");
        _system.Slab.ShrinkAll();
        long active = 0, corruptions = 0;
        foreach (var cache in _system.Slab.Caches)
        {
            active += cache.ActiveObjects;
            corruptions += cache.CorruptionsFound;
            if (cache.ActiveObjects != 0) failures.Add($"slab cache {cache.Name} still has {cache.ActiveObjects} active object(s)");
            foreach (var report in cache.Validate()) failures.Add($"slab cache {cache.Name}: {report.Title}");
        }
        if (corruptions != 0) failures.Add($"{corruptions} corruption report(s) from the slab caches");
        _system.Pages.DrainAllPages();
        string final = _system.Pages.BuddyInfo();
        bool restored = final == InitialBuddyInfo;
        if (!restored) failures.Add("/proc/buddyinfo differs from the start after ShrinkAll and DrainAllPages");
        long ops = Operations;
        return new StressReport(_threads, seconds, ops, ops / Math.Max(seconds, 1e-9), layers, StampErrors, _counterExpected, counterSum,
            _pool.RentedBuffers, active, corruptions, InitialBuddyInfo, final, restored, failures.Count == 0, failures);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _pool.Dispose();
        _counter.Dispose();
        _typed.Dispose();
    }
}
