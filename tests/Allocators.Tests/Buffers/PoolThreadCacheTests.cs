using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Allocators.AspNetCore;
using Allocators.Buffers;
using Allocators.Diagnostics;
using Allocators.Physical;
using Microsoft.AspNetCore.Connections;

namespace Allocators.Tests.Buffers;

/// <summary>The pool's per-thread caches, folded statistics, reclaim by default, failures and names.</summary>
public class PoolThreadCacheTests
{
    private static MemorySystem NewSystem(long size = 64L << 20) => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = size } });

    private static void OnThread(Action action)
    {
        var thread = new Thread(() => action());
        thread.Start();
        thread.Join();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StatisticsAreFoldedAcrossThreads(bool arrays)
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = arrays });
        const int PerThread = 300;
        var held = new ConcurrentBag<IMemoryOwner<byte>>();
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                var owner = pool.Rent(i % 2 == 0 ? -1 : 100);
                if (i % 3 == 0) held.Add(owner);
                else owner.Dispose();
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        MemoryPoolStatistics stats = pool.Statistics();
        Assert.Equal(4 * PerThread, stats.TotalRents);
        Assert.Equal(held.Count, stats.RentedBuffers);
        Assert.Equal(held.Sum(o => (long)o.Memory.Length), stats.RentedBytes);
        Assert.Equal(2 * PerThread * (4096L + 128), stats.TotalRentedBytes);
        Assert.Equal(stats.AllocatedBytes, stats.RentedBytes + stats.PooledBytes);

        foreach (var owner in held) owner.Dispose();
        stats = pool.Statistics();
        Assert.Equal(stats.TotalRents, stats.TotalReturns);
        Assert.Equal(0, stats.RentedBytes);
        Assert.Equal(stats.AllocatedBytes, stats.PooledBytes);
    }

    [Fact]
    public void BufferReturnedOnAnotherThreadIsReusedThere()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true });
        IMemoryOwner<byte>? owner = null;
        OnThread(() => owner = pool.Rent(-1));
        byte[]? array = null;
        IMemoryOwner<byte>? again = null;
        OnThread(() =>
        {
            System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(owner!.Memory, out var segment);
            array = segment.Array;
            owner.Dispose();
            again = pool.Rent(-1);
        });
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(again!.Memory, out var second);
        Assert.Same(array, second.Array);
        again.Dispose();
        MemoryPoolStatistics stats = pool.Statistics();
        Assert.Equal(2, stats.TotalRents);
        Assert.Equal(2, stats.TotalReturns);
        Assert.Equal(0, stats.RentedBytes);
        Assert.Equal(1, stats.TotalAllocations);
    }

    [Fact]
    public void PoolShrinksAfterABurstByDefault()
    {
        Assert.Equal(TimeSpan.FromSeconds(5), new NativeMemoryPoolOptions().TrimInterval);
        using var sys = NewSystem(128L << 20);
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true });
        var burst = new List<IMemoryOwner<byte>>();
        for (int i = 0; i < 4000; i++) burst.Add(pool.Rent(-1));
        OnThread(() => { foreach (var o in burst) o.Dispose(); });
        Assert.True(pool.PooledBytes >= 4000L * 4096 / 2, $"pooled {pool.PooledBytes}");

        // A quiet pool is trimmed to nothing within two reaper periods.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (pool.Statistics().AllocatedBytes > 0 && DateTime.UtcNow < deadline) Thread.Sleep(200);
        MemoryPoolStatistics stats = pool.Statistics();
        Assert.Equal(0, stats.AllocatedBytes);
        Assert.Equal(0, stats.PooledBytes);
        Assert.Equal(4000L * 4096, stats.TotalEvictedBytes);
    }

    [Fact]
    public void ReaperKeepsASteadyLoadsWorkingSet()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { TrimInterval = TimeSpan.FromMilliseconds(50) });
        // Steady use across at least three reaper periods; bounded in time, not in periods, for a loaded machine.
        var stop = DateTime.UtcNow.AddSeconds(20);
        while (pool.Statistics().Reaps < 3 && DateTime.UtcNow < stop)
        {
            pool.Rent(-1).Dispose();
            Thread.Sleep(1);
        }
        MemoryPoolStatistics stats = pool.Statistics();
        Assert.True(stats.Reaps >= 3, $"reaps {stats.Reaps}");
        Assert.True(stats.TotalAllocations <= 3, $"the working set of one buffer was reallocated {stats.TotalAllocations} times");
    }

    [Fact]
    public void ABusyThreadsCacheGivesBackWhatItDidNotUse()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { TrimInterval = null });
        // A burst fills this thread's magazine (64 buffers of 4 KiB); then a steady load that needs one buffer.
        var burst = new List<IMemoryOwner<byte>>();
        for (int i = 0; i < 64; i++) burst.Add(pool.Rent(-1));
        foreach (var owner in burst) owner.Dispose();
        Assert.Equal(64L * 4096, pool.PooledBytes);
        for (int period = 0; period < 12; period++)
        {
            for (int i = 0; i < 100; i++) pool.Rent(-1).Dispose();
            pool.Reap();
        }
        // Each period half of what sat unused in the magazine goes to the depot, whose idle half is evicted in turn.
        MemoryPoolStatistics stats = pool.Statistics();
        Assert.True(stats.PooledBytes <= 4L * 4096, $"pooled {stats.PooledBytes}");
        Assert.True(stats.TotalEvictedBytes >= 56L * 4096, $"evicted {stats.TotalEvictedBytes}");
        Assert.Equal(64, stats.TotalAllocations); // the working set of one buffer was never reallocated
        for (int i = 0; i < 100; i++) pool.Rent(-1).Dispose();
        Assert.Equal(64, pool.Statistics().TotalAllocations);
    }

    [Fact]
    public void RentFailureThrowsCountsAndRaisesTheEvent()
    {
        using var sys = NewSystem(16L << 20);
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { Name = "failing" });
        var events = new List<MemoryPoolRentFailure>();
        pool.RentFailed += events.Add;
        long metric = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == AllocatorsMetrics.MeterName && instrument.Name == "allocators.memory_pool.rent_failures")
                l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var t in tags) if (t.Key == "allocators.memory_pool.owner" && (string)t.Value! == pool.Name) metric += value;
        });
        listener.Start();
        _ = AllocatorsMetrics.Meter;

        var held = new List<IMemoryOwner<byte>>();
        MemoryPoolExhaustedException? failure = null;
        for (int i = 0; i < 64 && failure == null; i++)
        {
            try { held.Add(pool.Rent(1 << 20)); }
            catch (MemoryPoolExhaustedException e) { failure = e; }
        }
        Assert.NotNull(failure);
        Assert.Contains("'failing'", failure!.Message);
        Assert.Contains("1048576-byte buffer", failure.Message);
        Assert.Equal(pool.Name, failure.Failure.Pool);
        Assert.Single(events);
        Assert.Equal(1, pool.Failures);
        listener.RecordObservableInstruments();
        Assert.Equal(1, metric);

        // Nothing leaked: what was rented goes back, and renting works again.
        Assert.Equal(held.Count * (1L << 20), pool.RentedBytes);
        foreach (var o in held) o.Dispose();
        pool.Trim();
        Assert.Equal(0, pool.Statistics().AllocatedBytes);
        pool.Rent(1 << 20).Dispose();
    }

    [Fact]
    public void PoolsOfOneOwnerGetDistinctNames()
    {
        using var sys = NewSystem();
        var factory = new NativeMemoryPoolFactory(sys);
        // Names are unique in the whole process, and other tests run Kestrel beside this one: owners of its own.
        string kestrel = "kestrel-" + Guid.NewGuid().ToString("N"), sockets = "sockets-" + Guid.NewGuid().ToString("N");
        using var a = (NativeMemoryPool)factory.Create(new MemoryPoolOptions { Owner = kestrel });
        using var b = (NativeMemoryPool)factory.Create(new MemoryPoolOptions { Owner = kestrel });
        using var c = (NativeMemoryPool)factory.Create(new MemoryPoolOptions { Owner = sockets });
        Assert.Equal(kestrel, a.Name);
        Assert.Equal(kestrel + "-2", b.Name);
        Assert.Equal(sockets, c.Name);
        a.Dispose();
        using var d = (NativeMemoryPool)factory.Create(new MemoryPoolOptions { Owner = kestrel });
        Assert.Equal(kestrel, d.Name);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RentReturnFastPathAllocatesNothing(bool arrays)
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = arrays });
        // Long enough for the JIT to finish tiering the loop, whose on-stack replacement allocates a few bytes itself.
        Loop(pool, 20_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Loop(pool, 100_000);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        static void Loop(NativeMemoryPool pool, int count)
        {
            for (int i = 0; i < count; i++)
            {
                var a = pool.Rent(-1);
                var b = pool.Rent(20_000);
                a.Memory.Span[0] = 1;
                b.Dispose();
                a.Dispose();
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StressWithCrossThreadReturnsLosesNoByte(bool arrays)
    {
        // Four queues of up to 256 buffers (one in seven of 512 KiB) fit in the pool's low memory even when
        // ALLOCATORS_HIGHMEM=50% makes half the arena high.
        using var sys = NewSystem(256L << 20);
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions
        {
            ExposeAsArrays = arrays,
            TrimInterval = TimeSpan.FromMilliseconds(20), // the reaper runs through the stress too
            MaxPooledBytes = 1L << 20,
        });
        const int Threads = 4, PerThread = 20_000;
        int[] sizes = [-1, 1, 100, 4096, 5000, 40_000, 300_000];
        var queues = Enumerable.Range(0, Threads).Select(_ => new ConcurrentQueue<(IMemoryOwner<byte> Owner, int Stamp)>()).ToArray();
        long errors = 0, verified = 0;
        int finished = 0;

        void Check((IMemoryOwner<byte> Owner, int Stamp) item)
        {
            Span<byte> span = item.Owner.Memory.Span;
            byte expected = (byte)item.Stamp;
            if (span[0] != expected || span[span.Length / 2] != expected || span[^1] != expected) Interlocked.Increment(ref errors);
            else if (span.IndexOfAnyExcept(expected) >= 0) Interlocked.Increment(ref errors);
            Interlocked.Increment(ref verified);
            item.Owner.Dispose();
        }

        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var rnd = new Random(t);
            var next = queues[(t + 1) % Threads];
            for (int i = 0; i < PerThread; i++)
            {
                int size = sizes[rnd.Next(sizes.Length)];
                var owner = pool.Rent(size);
                int stamp = rnd.Next(1, 255);
                owner.Memory.Span.Fill((byte)stamp);
                if (i % 2 == 0) next.Enqueue((owner, stamp)); // returned by the next thread
                else Check((owner, stamp));
                // Bounded: drain what the previous thread handed over, and wait while the next thread has not taken
                // its share (on a loaded machine it may not run for a while; the arena holds only so much).
                while (queues[t].Count > 64 && queues[t].TryDequeue(out var item)) Check(item);
                while (next.Count > 256)
                {
                    if (queues[t].TryDequeue(out var item)) Check(item);
                    else Thread.Yield();
                }
            }
            Interlocked.Increment(ref finished);
            while (Volatile.Read(ref finished) < Threads || !queues[t].IsEmpty)
                if (queues[t].TryDequeue(out var item)) Check(item);
        })).ToList();
        threads.ForEach(th => th.Start());
        threads.ForEach(th => th.Join());

        Assert.Equal(0, errors);
        Assert.Equal(Threads * PerThread, verified);
        MemoryPoolStatistics stats = pool.Statistics();
        // The reaper (every 20 ms) may be evicting from a depot between two of the counters read: read again.
        for (int i = 0; i < 100 && stats.AllocatedBytes != stats.PooledBytes; i++)
        {
            Thread.Sleep(10);
            stats = pool.Statistics();
        }
        Assert.Equal(stats.TotalRents, stats.TotalReturns);
        Assert.Equal(0, stats.RentedBytes);
        Assert.Equal(stats.AllocatedBytes, stats.PooledBytes);
        pool.Trim();
        Assert.Equal(0, pool.Statistics().AllocatedBytes);
        Assert.Equal(pool.Statistics().TotalAllocatedBytes, pool.Statistics().TotalEvictedBytes);
    }
}
