using Allocators.Buffers;
using Allocators.Common;
using Allocators.Kasan;
using Allocators.Managed;
using Allocators.Mempool;
using Allocators.PageAlloc;
using Allocators.Slab;

namespace Allocators.Tests.Kasan;

/// <summary>
/// KASAN through the views and pools the library hands out: <see cref="NativeBuffer.Span"/>, the native buffers of
/// <see cref="NativeMemoryPool"/> (poisoned while the pool holds them, as the kernel's mempool poisons its elements) and
/// <see cref="ReservePool"/>'s reserve, with no false report when the pools give their memory back.
/// </summary>
public sealed unsafe class KasanPoolTests
{
    [Fact]
    public void NativeBufferSpanAfterFreeIsAUseAfterFree()
    {
        using MemorySystem sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        NativeBuffer buffer = sys.Slab.AllocBuffer(100);
        buffer.Span.Fill(7);
        NativeBuffer copy = buffer;
        buffer.Free();
        Assert.Throws<KasanException>(() => copy.Span.Length);
        KasanSlabTests.Single(kasan, "slab-use-after-free", (void*)copy.Address, 100, write: false);
    }

    [Fact]
    public void PoolBuffersArePoisonedWhileThePoolHoldsThem()
    {
        using MemorySystem sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        using var pool = new NativeMemoryPool(sys.Slab, new NativeMemoryPoolOptions { TrimInterval = null });
        foreach (int size in new[] { 512, 4096, 65536 })
        {
            RentedBuffer rented = Rent(pool, size);
            rented.Owner.Memory.Span.Fill(1);
            rented.Owner.Dispose();
            // Waiting in the pool: a checked access is a use after free.
            Assert.Throws<KasanException>(() => kasan.Check(rented.Pointer, 1, write: true, "test"));
            byte expected = size <= SlabAllocator.KmallocMaxCacheSize ? KasanShadowCode.SlabFree : KasanShadowCode.PageFree;
            Assert.Equal(expected, kasan.ShadowOf(rented.Pointer));
            // Rented again (the same buffer, from the thread's magazine): accessible again.
            RentedBuffer again = Rent(pool, size);
            Assert.True(again.Pointer == rented.Pointer);
            kasan.Check(again.Pointer, (nuint)again.Owner.Memory.Length, write: true, "test");
            again.Owner.Memory.Span.Fill(2);
            again.Owner.Dispose();
        }
        Assert.Equal(3, kasan.Reports.Count);
        // Trimming frees the poisoned buffers: the allocator's free checks see no double free.
        pool.Trim();
        Assert.Equal(3, kasan.Reports.Count);
        Assert.Equal(0, pool.Statistics().AllocatedBytes);
    }

    private readonly struct RentedBuffer(System.Buffers.IMemoryOwner<byte> owner, byte* pointer)
    {
        public System.Buffers.IMemoryOwner<byte> Owner { get; } = owner;

        public byte* Pointer { get; } = pointer;
    }

    private static RentedBuffer Rent(NativeMemoryPool pool, int size)
    {
        System.Buffers.IMemoryOwner<byte> owner = pool.Rent(size);
        using System.Buffers.MemoryHandle pin = owner.Memory.Pin();
        return new RentedBuffer(owner, (byte*)pin.Pointer);
    }

    [Fact]
    public void ReservePoolElementsArePoisonedInTheReserveAndADoubleFreeIsRefused()
    {
        using MemorySystem sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        using (var pool = ReservePool.CreateKmallocPool(sys.Slab, minNr: 2, size: 96))
        {
            sys.Slab.Failslab.Probability = 100;
            byte* a = (byte*)pool.Alloc(Gfp.Kernel);
            byte* b = (byte*)pool.Alloc(Gfp.Kernel);
            sys.Slab.Failslab.Probability = 0;
            // Handed out from the reserve: the element's 96 bytes are usable, the red zone after them is not.
            kasan.Check(a, 96, write: true, "test");
            Assert.Throws<KasanException>(() => kasan.Check(a + 96, 1, write: true, "test"));
            pool.Free(a);
            Assert.Equal(1, pool.Count);
            Assert.Throws<KasanException>(() => kasan.Check(a, 1, write: false, "test"));
            Assert.Equal("slab-use-after-free", kasan.Reports[^1].Type);
            // A second free of an element in the reserve is refused, and the reserve is unchanged.
            Assert.Throws<MemoryCorruptionException>(() => pool.Free(a));
            Assert.Equal("double-free", kasan.Reports[^1].Type);
            Assert.Equal(1, pool.Count);
            pool.Free(b);
            Assert.Equal(2, pool.Count);
        }
        // Disposing frees the reserve through kfree, with no report of its own.
        int reports = kasan.Reports.Count;
        using (var pages = ReservePool.CreatePagePool(sys.Pages, minNr: 1, order: 1)) { }
        Assert.Equal(reports, kasan.Reports.Count);
    }
}
