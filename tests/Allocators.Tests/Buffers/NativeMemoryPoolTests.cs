using System.Buffers;
using System.IO.Pipelines;
using Allocators.Buffers;
using Allocators.Physical;
using Allocators.Tests.Threading;

namespace Allocators.Tests.Buffers;

public class NativeMemoryPoolTests
{
    private static MemorySystem NewSystem() => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64L << 20 } });

    [Theory]
    [InlineData(-1, 4096)]
    [InlineData(1, 16)]
    [InlineData(100, 128)]
    [InlineData(5000, 8192)]
    [InlineData(10000, 16384)]
    [InlineData(1 << 20, 1 << 20)]
    public void RentGivesAtLeastTheSizeAndWritableMemory(int request, int expected)
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab);
        using (var owner = pool.Rent(request))
        {
            Assert.Equal(expected, owner.Memory.Length);
            owner.Memory.Span.Fill(0xAB);
            Assert.All(owner.Memory.Span.ToArray(), b => Assert.Equal(0xAB, b));
            Assert.Equal(expected, pool.RentedBytes);
        }
        Assert.Equal(0, pool.RentedBytes);
        Assert.Equal(1, pool.Statistics().TotalRents);
        Assert.Equal(1, pool.Statistics().TotalReturns);
    }

    [Fact]
    public void SteadyStateRentDisposeAllocatesNoManagedBytes()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab);
        // Long enough for the JIT to finish tiering the loop, whose on-stack replacement allocates a few bytes itself.
        RentWriteDispose(pool, 20_000);
        // The pool's idle trim under a loaded run may also retire this thread's cache once.
        Assert.Equal(0, ManagedBytes.LeastOf(3, () => RentWriteDispose(pool, 100_000)));
    }

    private static void RentWriteDispose(NativeMemoryPool pool, int count)
    {
        for (int i = 0; i < count; i++)
        {
            var owner = pool.Rent(4096);
            owner.Memory.Span[0] = 1;
            owner.Dispose();
        }
    }

    [Fact]
    public void DebugModeCatchesDoubleReturnAndUseAfterReturn()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { DebugChecks = true });
        var owner = pool.Rent(64);
        Memory<byte> memory = owner.Memory;
        owner.Dispose();
        var useAfter = Assert.Throws<ObjectDisposedException>(() => memory.Span[0] = 1);
        Assert.Contains("used after it was returned", useAfter.Message);
        var twice = Assert.Throws<InvalidOperationException>(() => owner.Dispose());
        Assert.Contains("returned twice", twice.Message);
        Assert.Equal(0, pool.RentedBytes);
    }

    [Fact]
    public void TooLargeIsRejected()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(pool.MaxBufferSize + 1));
    }

    [Fact]
    public async Task PipeRunsOnThePool()
    {
        using var sys = NewSystem();
        using var pool = new NativeMemoryPool(sys.Slab);
        var pipe = new Pipe(new PipeOptions(pool, minimumSegmentSize: 4096, useSynchronizationContext: false));
        var data = new byte[1_000_000];
        new Random(3).NextBytes(data);
        var writer = Task.Run(async () =>
        {
            for (int offset = 0; offset < data.Length; offset += 7000)
                await pipe.Writer.WriteAsync(data.AsMemory(offset, Math.Min(7000, data.Length - offset)));
            await pipe.Writer.CompleteAsync();
        });
        var received = new MemoryStream();
        while (true)
        {
            var result = await pipe.Reader.ReadAsync();
            foreach (var segment in result.Buffer) received.Write(segment.Span);
            pipe.Reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted) break;
        }
        await pipe.Reader.CompleteAsync();
        await writer;
        Assert.Equal(data, received.ToArray());
        Assert.True(pool.Statistics().TotalRents > 0);
        Assert.Equal(0, pool.RentedBytes);
    }
}
