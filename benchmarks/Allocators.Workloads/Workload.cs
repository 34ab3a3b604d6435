using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Slab;

namespace Allocators.Workloads;

/// <summary>How much of each workload's published run one bench mode runs.</summary>
/// <param name="Name">"quick", "full" or "tiny" (tests).</param>
/// <param name="Fraction">
/// Share of each workload's published run: of its duration for the time-bound workloads, of its count (rounds,
/// iterations, operations per thread) for the fixed-work ones. Only the length changes: sizes, slot counts, batch and
/// hand-off intervals, and what one operation is stay the published ones in every mode.
/// </param>
/// <param name="MinDuration">Shortest time-bound run: below about 15 ms the threads would barely have started.</param>
/// <param name="TreeDepth">binary-trees maximum depth (its work doubles per level, so it is scaled by depth).</param>
/// <param name="Rounds">Measured runs per (workload, allocator, threads); the fastest is reported.</param>
internal sealed record BenchScale(string Name, double Fraction, TimeSpan MinDuration, int TreeDepth, int Rounds)
{
    /// <summary>1/32 of every published run: the whole suite in under a minute on 2 cores.</summary>
    public static BenchScale Quick { get; } = new("quick", 1.0 / 32, TimeSpan.FromMilliseconds(15), 15, 1);

    /// <summary>
    /// The published runs (larson and xmalloc-test 5 s, glibc-thread 2 s, binary-trees depth 21, the fixed-work ones
    /// their full counts), once each: a published run lasts seconds, so a second round would add minutes, not precision.
    /// </summary>
    public static BenchScale Full { get; } = new("full", 1, TimeSpan.Zero, 21, 1);

    /// <summary>Smallest sizes, for tests and warm-ups.</summary>
    public static BenchScale Tiny { get; } = new("tiny", 1.0 / 2000, TimeSpan.FromMilliseconds(15), 6, 1);

    /// <summary>True when this mode runs the published parameters in full.</summary>
    public bool IsPublished => Fraction >= 1;

    /// <summary>"the published run" or "1/32 of the published run", for descriptions.</summary>
    public string Share => IsPublished ? "the published run" : string.Create(CultureInfo.InvariantCulture, $"1/{Math.Round(1 / Fraction):0} of the published run");
}

/// <summary>What a workload reports about one run.</summary>
internal sealed class WorkloadOutcome
{
    /// <summary>Operations done in the timed region (the workload says what one operation is).</summary>
    public long Operations { get; init; }

    /// <summary>Length of the timed region.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>False when the workload's own checks failed (lost objects, wrong output, corrupted blocks).</summary>
    public bool Verified { get; set; } = true;

    /// <summary>What failed, or a remark.</summary>
    public string? Detail { get; set; }

    /// <summary>Slot arrays handed to a new thread (larson); 0 for the other workloads.</summary>
    public long Handoffs { get; init; }

    /// <summary>Program output (binary-trees).</summary>
    public string? Output { get; init; }

    /// <summary>Operations per second.</summary>
    public double OpsPerSecond => Elapsed.TotalSeconds > 0 ? Operations / Elapsed.TotalSeconds : 0;

    /// <summary>Marks the run failed with a reason (keeps the first reason).</summary>
    public void Fail(string why)
    {
        Verified = false;
        Detail ??= why;
    }

    /// <summary>The checks every stamping workload ends with: no corrupted stamp, no live byte left.</summary>
    public WorkloadOutcome CheckStampsAndLive(long stampErrors, RunContext context)
    {
        if (stampErrors != 0) Fail($"{stampErrors} blocks had a corrupted stamp");
        long left = context.Live.Sum();
        if (left != 0) Fail($"live byte count is {left} after freeing everything");
        return this;
    }

    /// <summary>Sums per-thread counters kept 16 longs apart (one cache line each, no false sharing).</summary>
    public static long SumPadded(long[] counts, int threads)
    {
        long total = 0;
        for (int t = 0; t < threads; t++) total += counts[t * 16];
        return total;
    }
}

/// <summary>Per-run state shared by a workload and the runner: thread count, scale, live-byte counters.</summary>
internal sealed class RunContext(int threads, BenchScale scale)
{
    /// <summary>Threads the workload should use (its own meaning per workload, documented there).</summary>
    public int Threads { get; } = threads;

    /// <summary>The mode's sizes.</summary>
    public BenchScale Scale { get; } = scale;

    /// <summary>Bytes the workload holds live, as requested (per-owner counters the runner samples).</summary>
    public LiveCounters Live { get; } = new(Math.Max(threads * 2 + 2, 8));

    /// <summary>How long a time-bound workload whose published run lasts <paramref name="published"/> runs in this mode.</summary>
    public TimeSpan Duration(TimeSpan published)
        => Scale.IsPublished ? published : TimeSpan.FromTicks(Math.Max(Scale.MinDuration.Ticks, (long)(published.Ticks * Scale.Fraction)));

    /// <summary>This mode's share of a published count (rounds, iterations, operations), at least <paramref name="atLeast"/>.</summary>
    public long Count(long published, long atLeast = 1)
        => Scale.IsPublished ? published : Math.Min(published, Math.Max(atLeast, (long)Math.Round(published * Scale.Fraction)));
}

/// <summary>
/// Bytes held live by a workload, counted per owner (a thread, or a slot array that moves between threads) in
/// padded cells so owners never share a cache line; the runner's sampler sums them without synchronisation.
/// </summary>
internal sealed class LiveCounters(int owners)
{
    [StructLayout(LayoutKind.Sequential, Size = 128)]
    private struct Cell
    {
        public long Bytes;
    }

    private readonly Cell[] _cells = new Cell[owners];

    /// <summary>Number of owner cells.</summary>
    public int Count => _cells.Length;

    /// <summary>The counter of one owner; only that owner writes it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref long Of(int owner) => ref _cells[owner].Bytes;

    /// <summary>The current total (racy snapshot).</summary>
    public long Sum()
    {
        long sum = 0;
        for (int i = 0; i < _cells.Length; i++) sum += Volatile.Read(ref _cells[i].Bytes);
        return sum;
    }
}

/// <summary>
/// A comparative workload. <see cref="Run{TAlloc, TBlock}"/> is instantiated once per allocator struct, so each
/// allocator gets its own specialised copy of the workload's loops.
/// </summary>
internal abstract class Workload
{
    /// <summary>Short name (command-line and table key).</summary>
    public abstract string Name { get; }

    /// <summary>One line: what it simulates and what one operation is.</summary>
    public abstract string Description { get; }

    /// <summary>Unit printed after the throughput ("ops/s" unless the workload says otherwise).</summary>
    public virtual string Unit => "ops/s";

    /// <summary>False when blocks must hold pointers, so ArrayPool byte arrays cannot stand in for them.</summary>
    public virtual bool SupportsArrayPool => true;

    /// <summary>Most measured rounds worth running (binary-trees at depth 21 is long enough to run once).</summary>
    public virtual int MaxRounds => int.MaxValue;

    /// <summary>True for the false-sharing workloads, which also run on the per-thread-private reference.</summary>
    public virtual bool HasPrivateReference => false;

    /// <summary>Runs the workload once on <paramref name="allocator"/>.</summary>
    public abstract WorkloadOutcome Run<TAlloc, TBlock>(TAlloc allocator, RunContext context)
        where TAlloc : struct, IBlockAllocator<TBlock>;

    /// <summary>True when every block has one size, so <see cref="RunOnTypedCache"/> runs on a typed cache.</summary>
    public bool HasTypedCache => GetType().GetMethod(nameof(RunOnTypedCache))!.DeclaringType != typeof(Workload);

    /// <summary>
    /// Runs on an Allocators typed cache when every block has one size; null when the workload has several sizes. The
    /// cache is called through its plain <c>Alloc</c>/<c>Free</c>, or, with <paramref name="handles"/>, through each
    /// thread's handle (<see cref="KmemCache{T}.ThisThread"/>), every handle taken counted there.
    /// </summary>
    public virtual WorkloadOutcome? RunOnTypedCache(SlabAllocator slab, RunContext context, ThreadHandleCount? handles) => null;

    /// <summary>Helper for <see cref="RunOnTypedCache"/>: a fresh typed cache of <typeparamref name="T"/>, destroyed after (which fails if objects leaked).</summary>
    protected WorkloadOutcome RunOnCache<T>(SlabAllocator slab, RunContext context, ThreadHandleCount? handles) where T : unmanaged
    {
        var cache = slab.CreateCache<T>($"bench-{Name}");
        WorkloadOutcome outcome = handles is null
            ? Run<SlabCacheAllocator<T>, nint>(new SlabCacheAllocator<T>(cache), context)
            : Run<SlabCacheThreadHandles<T>, nint>(new SlabCacheThreadHandles<T>(cache, handles), context);
        try
        {
            cache.Dispose();
        }
        catch (InvalidOperationException ex)
        {
            outcome.Fail("typed cache not empty at the end: " + ex.Message.Split('\n')[0]);
        }
        return outcome;
    }

    /// <summary>Starts <paramref name="count"/> threads running <paramref name="body"/>(index) and waits for all of them.</summary>
    internal static void RunThreads(int count, Action<int> body, string name)
    {
        var threads = new Thread[count];
        Exception? failure = null;
        for (int i = 0; i < count; i++)
        {
            int index = i;
            threads[i] = new Thread(() =>
            {
                try { body(index); }
                catch (Exception ex) { Interlocked.CompareExchange(ref failure, ex, null); }
            }, 1 << 20) { IsBackground = true, Name = $"{name}-{i}" };
        }
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        if (failure is not null) throw new InvalidOperationException($"{name}: a worker failed: {failure.Message}", failure);
    }

    /// <summary>Sleeps for <paramref name="duration"/> and then raises <paramref name="stop"/>.</summary>
    internal static void StopAfter(TimeSpan duration, StrongBox<bool> stop)
    {
        Thread.Sleep(duration);
        Volatile.Write(ref stop.Value, true);
    }

    /// <summary>Writes the block's size and a check word into its first 8 bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Stamp(ref byte data, int size)
    {
        Unsafe.WriteUnaligned(ref data, (uint)size);
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref data, 4), (uint)size ^ StampKey);
    }

    /// <summary>Reads the size back from a stamped block; -1 when the stamp was overwritten.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ReadStamp(ref byte data)
    {
        uint size = Unsafe.ReadUnaligned<uint>(ref data);
        uint check = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref data, 4));
        return (size ^ StampKey) == check ? (int)size : -1;
    }

    /// <summary>XOR key of <see cref="Stamp"/>.</summary>
    internal const uint StampKey = 0x5A17_C0DE;

    /// <summary>A stopwatch started now.</summary>
    internal static Stopwatch Clock() => Stopwatch.StartNew();
}

/// <summary>A small, fast, per-thread pseudo-random generator (xorshift64*), the same sequence for every allocator.</summary>
internal struct FastRandom(ulong seed)
{
    private ulong _state = seed == 0 ? 0x9E37_79B9_7F4A_7C15UL : seed * 0x9E37_79B9_7F4A_7C15UL;

    /// <summary>Next 64 random bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Next()
    {
        ulong x = _state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        _state = x;
        return x * 0x2545_F491_4F6C_DD1DUL;
    }

    /// <summary>Uniform in [0, n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Below(int n) => (int)(((Next() >> 32) * (ulong)(uint)n) >> 32);

    /// <summary>Uniform in [lo, hi].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Between(int lo, int hi) => lo + Below(hi - lo + 1);

    /// <summary>Uniform in [0, 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
}
