using System.Runtime.InteropServices;
using Allocators.Buffers;
using Allocators.Physical;
using Allocators.Tests.Threading;

namespace Allocators.Tests.Buffers;

/// <summary>The pool with <see cref="NativeMemoryPoolOptions.ExposeAsArrays"/>, as Kestrel runs it.</summary>
public unsafe class NativeMemoryPoolArrayTests
{
    internal static MemorySystem NewSystem() => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64L << 20 } });

    [Fact]
    public void ExposedArraysAreTheBuffer()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true });
        for (int round = 0; round < 3; round++)
        {
            foreach (int size in new[] { -1, 10, 5000, 100_000 })
            {
                using var owner = pool.Rent(size);
                Assert.True(MemoryMarshal.TryGetArray<byte>(owner.Memory, out var segment));
                Assert.Equal(owner.Memory.Length, segment.Count);
                Assert.Equal(owner.Memory.Length, segment.Array!.Length);
                segment.Array[segment.Count - 1] = 42;
                Assert.Equal(42, owner.Memory.Span[^1]);
                owner.Memory.Span[0] = 7;
                Assert.Equal(7, segment.Array[0]);
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                Assert.Equal(42, segment.Array[^1]);
            }
        }
        Assert.Equal(4096, pool.Rent(-1).Memory.Length);
    }

    /// <summary>
    /// Issue 16, defect 6: an array kept from <c>TryGetArray</c> past the owner's return must stay a view of its own
    /// buffer. When the array header lived in the pooled native slot, a Kmalloc(2000) that reused the slot and filled it
    /// with 0x7F turned the kept array's length into 2,139,062,143, and a bounds-checked write landed in another object.
    /// </summary>
    [Fact]
    public void KeptArrayStaysInsideItsOwnBufferAfterReturn()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true });
        var owner = pool.Rent(2000);
        Assert.True(MemoryMarshal.TryGetArray<byte>(owner.Memory, out var segment));
        byte[] kept = segment.Array!;
        int length = kept.Length;
        owner.Dispose();

        var others = new List<nint>();
        try
        {
            for (int i = 0; i < 64; i++)
            {
                byte* p = (byte*)sys.Slab.Kmalloc(2000);
                new Span<byte>(p, 2000).Fill(0x7F);
                others.Add((nint)p);
            }
            using var otherOwner = pool.Rent(100_000);
            otherOwner.Memory.Span.Fill(0x7F);

            Assert.Equal(length, kept.Length);
            kept[length - 1] = 0xEE;
            Assert.All(others, p => Assert.Equal(-1, new Span<byte>((byte*)p, 2000).IndexOfAnyExcept((byte)0x7F)));
            Assert.Equal(-1, otherOwner.Memory.Span.IndexOfAnyExcept((byte)0x7F));
            Assert.Throws<IndexOutOfRangeException>(() => kept[length] = 0xEE);
            Assert.Throws<IndexOutOfRangeException>(() => kept[14314] = 0xEE);
        }
        finally
        {
            foreach (nint p in others) sys.Slab.Kfree((void*)p);
        }
    }

    [Fact]
    public void SteadyStateRentDisposeAllocatesNoManagedBytes()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true });
        int[] sizes = [-1, 100, 5000, 100_000];
        // Long enough for the JIT to finish tiering the loop, whose on-stack replacement allocates a few bytes itself.
        RentUseReturn(pool, sizes, 20_000);
        // The pool's idle trim under a loaded run may also retire this thread's cache once.
        Assert.Equal(0, ManagedBytes.LeastOf(3, () => RentUseReturn(pool, sizes, 100_000)));
        Assert.Equal(4096 + 128 + 8192 + 131072, pool.PooledBytes);
    }

    private static void RentUseReturn(NativeMemoryPool pool, int[] sizes, int count)
    {
        for (int i = 0; i < count; i++)
        {
            var owner = pool.Rent(sizes[i % sizes.Length]);
            owner.Memory.Span[0] = 1;
            MemoryMarshal.TryGetArray<byte>(owner.Memory, out var segment);
            segment.Array![^1] = 2;
            owner.Memory.Pin().Dispose();
            owner.Dispose();
        }
    }

    [Fact]
    public void ArraysArePinnedAndReused()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true });
        byte[] first;
        using (var owner = pool.Rent(-1))
        {
            Assert.True(MemoryMarshal.TryGetArray<byte>(owner.Memory, out var segment));
            first = segment.Array!;
            using var handle = owner.Memory.Slice(10).Pin();
            nint address = (nint)handle.Pointer;
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            fixed (byte* data = first) Assert.Equal((nint)(data + 10), address);
        }
        using (var again = pool.Rent(4000))
        {
            Assert.True(MemoryMarshal.TryGetArray<byte>(again.Memory, out var segment));
            Assert.Same(first, segment.Array);
        }
    }

    [Fact]
    public void PooledArraysStayWithinTheByteBudget()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true, MaxPooledBytes = 3 * 65536, ThreadCacheBytes = 0 });
        var owners = Enumerable.Range(0, 8).Select(_ => pool.Rent(65536)).ToList();
        Assert.Equal(8 * 65536, pool.RentedBytes);
        foreach (var owner in owners) owner.Dispose();
        Assert.Equal(3 * 65536, pool.PooledBytes);
        Assert.Equal(0, pool.RentedBytes);
        pool.Dispose();
        Assert.Equal(0, pool.PooledBytes);
    }

    [Fact]
    public void DebugModeCatchesUseAfterReturnOfTheArrayView()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { ExposeAsArrays = true, DebugChecks = true });
        var owner = pool.Rent(64);
        Memory<byte> memory = owner.Memory;
        Assert.True(MemoryMarshal.TryGetArray<byte>(memory, out var segment));
        owner.Dispose();
        Assert.Throws<ObjectDisposedException>(() => MemoryMarshal.TryGetArray<byte>(memory, out _));
        Assert.Throws<ObjectDisposedException>(() => memory.Span[0] = 1);
        Assert.Throws<InvalidOperationException>(() => owner.Dispose());
        Assert.Equal(64, segment.Array!.Length);
        Assert.Equal(0, pool.RentedBuffers);
    }

    /// <summary>
    /// Kestrel runs two array pools. After a burst each holds ~5 MiB, under the old per-pool 8 MiB mark, so neither
    /// asked for a collection and the pinned arrays stayed in the process; the process-wide count makes the first
    /// idle pool collect.
    /// </summary>
    [Fact]
    public void AfterABurstIdleArrayPoolsTogetherHaveTheirArraysCollected()
    {
        using var sys = NewSystem();
        var options = new NativeMemoryPoolOptions { ExposeAsArrays = true, TrimInterval = TimeSpan.FromMilliseconds(50) };
        using var a = new NativeMemoryPool(sys.Slab, options);
        using var b = new NativeMemoryPool(sys.Slab, options);
        const int PerPool = 20, Size = 256 * 1024; // 5 MiB each
        foreach (var pool in new[] { a, b })
        {
            var held = Enumerable.Range(0, PerPool).Select(_ => pool.Rent(Size)).ToList();
            foreach (var owner in held) owner.Dispose();
        }
        long evicted = 2L * PerPool * Size;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while ((a.PooledBytes != 0 || b.PooledBytes != 0) && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.True(a.PooledBytes == 0 && b.PooledBytes == 0, $"pooled {a.PooledBytes} and {b.PooledBytes} bytes after the idle trims");
        // Once both trimmed, the count holds at least their evictions until a collection takes them off (other
        // tests' pools can only add to it).
        while (NativeMemoryPool.UncollectedArrayBytes >= evicted && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.True(NativeMemoryPool.UncollectedArrayBytes < evicted, $"{NativeMemoryPool.UncollectedArrayBytes} evicted array bytes never collected");
    }

    [Theory]
    [InlineData(0, 1L << 20)]
    [InlineData(24L << 20, 3L << 20)]
    [InlineData(1L << 30, 8L << 20)]
    public void ACollectionIsWorthAnEighthOfTheHeapBetween1And8MiB(long committed, long threshold)
        => Assert.Equal(threshold, NativeMemoryPool.CollectThreshold(committed));
}
