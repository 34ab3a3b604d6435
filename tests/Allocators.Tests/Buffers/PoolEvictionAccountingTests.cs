using Allocators.Buffers;
using Allocators.Tests.Bench;

namespace Allocators.Tests.Buffers;

/// <summary>
/// What an eviction counts toward: every evicted array toward the process-wide collection mark, whoever evicted it.
/// Serial: the count is process-wide and other tests' idle pools reset it when they collect.
/// </summary>
[Collection(nameof(SerialNativeHeap))]
public sealed class PoolEvictionAccountingTests
{
    /// <summary>
    /// Returns past the pool's byte budget evict arrays at once; those arrays are garbage like a reaper's, and an idle
    /// pool must count them when it decides to ask the GC for a decommitting collection (they were left out).
    /// </summary>
    [Fact]
    public void ArraysEvictedByAReturnOverTheBudgetCountTowardTheCollection()
    {
        using var sys = NativeMemoryPoolArrayTests.NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true, TrimInterval = null, MaxPooledBytes = 1L << 20 });
        const int Count = 24, Size = 256 * 1024;
        var held = Enumerable.Range(0, Count).Select(_ => pool.Rent(Size)).ToList();
        long before = NativeMemoryPool.UncollectedArrayBytes;
        foreach (var owner in held) owner.Dispose();
        long evicted = pool.Statistics().TotalEvictedBytes;
        Assert.True(evicted >= 4L << 20, $"only {evicted} bytes evicted over a 1 MiB budget");
        Assert.Equal(evicted, NativeMemoryPool.UncollectedArrayBytes - before);
    }

    /// <summary>A trim reports the bytes it evicted itself: what the depots and caches held, nothing else.</summary>
    [Fact]
    public void TrimReturnsWhatThePoolHeld()
    {
        using var sys = NativeMemoryPoolArrayTests.NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { TrimInterval = null });
        var held = Enumerable.Range(0, 64).Select(i => pool.Rent(4096 << (i % 3))).ToList();
        foreach (var owner in held) owner.Dispose();
        long pooled = pool.PooledBytes;
        Assert.True(pooled > 0);
        long evictedBefore = pool.Statistics().TotalEvictedBytes;
        Assert.Equal(pooled, pool.Trim());
        Assert.Equal(0, pool.PooledBytes);
        Assert.Equal(evictedBefore + pooled, pool.Statistics().TotalEvictedBytes);
    }
}
