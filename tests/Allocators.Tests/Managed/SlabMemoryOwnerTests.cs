using System.Buffers;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Managed;
using Allocators.Slab;
using Allocators.Tests.Threading;
using static Allocators.Tests.Managed.ManagedTestSupport;

namespace Allocators.Tests.Managed;

/// <summary>
/// <see cref="SlabMemoryOwner"/> and <see cref="NativeBuffer"/> over kmalloc and cache objects: every byte written
/// comes back, a second dispose is refused with the address named and nothing changed, views after dispose are
/// refused rather than reading freed memory, and bad input throws with the books unchanged.
/// </summary>
public class SlabMemoryOwnerTests
{
    private static readonly int[] Sizes = [0, 1, 7, 8, 63, 64, 65, 100, 192, 1000, 4096, 5000, 65536, 200_000, 4 << 20];

    [Fact]
    public void EveryByteWrittenThroughAnOwnerComesBack()
    {
        using var sys = NewSystem(mebibytes: 64);
        var owners = new List<SlabMemoryOwner>();
        for (int round = 0; round < 3; round++)
            foreach (int size in Sizes)
            {
                SlabMemoryOwner owner = sys.Slab.RentMemory(size);
                Assert.Equal(size, owner.Length);
                Assert.Equal(size, owner.Memory.Length);
                Fill(owner.Memory.Span, owners.Count);
                owners.Add(owner);
            }
        // All live at once: a neighbour's writes would show here.
        for (int i = 0; i < owners.Count; i++)
        {
            Assert.Equal(-1, FirstWrong(owners[i].Span, i));
            Assert.Equal(-1, FirstWrong(owners[i].Memory.Span, i));
        }
        foreach (SlabMemoryOwner owner in owners) owner.Dispose();
    }

    [Fact]
    public void EveryByteWrittenThroughANativeBufferComesBack()
    {
        using var sys = NewSystem(mebibytes: 64);
        var buffers = new List<NativeBuffer>();
        foreach (int size in Sizes)
        {
            NativeBuffer buffer = sys.Slab.AllocBuffer(size);
            Fill(buffer.Span, buffers.Count);
            buffers.Add(buffer);
        }
        for (int i = 0; i < buffers.Count; i++) Assert.Equal(-1, FirstWrong(buffers[i].Span, i));
        Span<long> longs = buffers[^1].AsSpan<long>();
        Assert.Equal((4 << 20) / 8, longs.Length);
        foreach (NativeBuffer buffer in buffers) buffer.Free();
    }

    [Fact]
    public void CacheObjectsAsOwnersAndBuffers()
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("managed-100", 100);
        SlabMemoryOwner owner = cache.RentMemory();
        NativeBuffer buffer = cache.AllocBuffer();
        Assert.Equal(100, owner.Length);
        Assert.Equal(100, buffer.Length);
        Fill(owner.Span, 1);
        Fill(buffer.Span, 2);
        Assert.Equal(2, Live(sys.Slab, cache));
        Assert.Equal(-1, FirstWrong(owner.Memory.Span, 1));
        Assert.Equal(-1, FirstWrong(buffer.Span, 2));
        owner.Dispose();
        buffer.Free();
        Assert.Equal(0, Live(sys.Slab, cache));
    }

    [Fact]
    public void ASecondDisposeIsRefusedAndChangesNothing()
    {
        using var sys = NewSystem();
        SlabMemoryOwner owner = sys.Slab.RentMemory(64);
        nuint address = owner.Address;
        owner.Dispose();
        string before = Books(sys.Slab);
        var ex = Assert.Throws<ObjectDisposedException>(owner.Dispose);
        Assert.Contains($"0x{address:x}", ex.Message);
        Assert.Contains("already disposed", ex.Message);
        Assert.Equal(before, Books(sys.Slab));
        // Through the interface and the MemoryManager's own Dispose(bool) too.
        Assert.Throws<ObjectDisposedException>(() => ((IMemoryOwner<byte>)owner).Dispose());
        Assert.Throws<ObjectDisposedException>(() => ((IDisposable)owner).Dispose());
    }

    [Fact]
    public void ViewsAfterDisposeAreRefused()
    {
        using var sys = NewSystem();
        SlabMemoryOwner owner = sys.Slab.RentMemory(64);
        Memory<byte> memory = owner.Memory; // taken before the dispose
        memory.Span[0] = 1;
        owner.Dispose();
        Assert.Throws<ObjectDisposedException>(() => memory.Span[0]);
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());
        Assert.Throws<ObjectDisposedException>(() => memory.ToArray());
        Assert.Throws<ObjectDisposedException>(() => owner.Memory);
        Assert.Throws<ObjectDisposedException>(() => owner.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => owner.GetSpan().Length);
        Assert.Contains("used after Dispose", Assert.Throws<ObjectDisposedException>(() => memory.Span.Length).Message);
        Assert.Contains("disposed", owner.ToString());
    }

    [Fact]
    public void NativeBufferDoubleFreeGetsTheRawApisCheck()
    {
        using var sys = NewSystem();
        NativeBuffer a = sys.Slab.AllocBuffer(64);
        NativeBuffer b = sys.Slab.AllocBuffer(64);
        a.Free();
        b.Free();
        string before = Books(sys.Slab);
        var ex = Assert.ThrowsAny<MemoryCorruptionException>(a.Free);
        Assert.Contains($"{a.Address:x}", ex.Message);
        Assert.Equal(before, Books(sys.Slab));
        Assert.Throws<InvalidOperationException>(() => default(NativeBuffer).Free());
        Assert.True(default(NativeBuffer).IsDefault);
    }

    [Fact]
    public void BadInputThrowsAndAllocatesNothing()
    {
        using var sys = NewSystem();
        string before = Books(sys.Slab);
        Assert.Throws<ArgumentOutOfRangeException>(() => sys.Slab.RentMemory(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => sys.Slab.AllocBuffer(-1));
        Assert.Throws<ArgumentNullException>(() => SlabAllocatorExtensions.RentMemory(null!, 64));
        Assert.Throws<ArgumentNullException>(() => KmemCacheExtensions.RentMemory(null!));
        SlabMemoryOwner owner = sys.Slab.RentMemory(16);
        Assert.Throws<ArgumentOutOfRangeException>(() => owner.Pin(17));
        owner.Dispose();
        Assert.Equal(before, Books(sys.Slab));
    }

    [Fact]
    public void AnOwnerFreedThroughTheRawApiMeanwhileIsRefusedOnDispose()
    {
        // The same object freed twice by two routes: the slab layer's check, not a silent second free.
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("managed-raw", 48);
        NativeBuffer first = cache.AllocBuffer();
        NativeBuffer other = cache.AllocBuffer();
        SlabMemoryOwner owner = cache.RentMemory();
        first.Free();
        other.Free();
        Assert.ThrowsAny<MemoryCorruptionException>(first.Free);
        owner.Dispose();
        Assert.Equal(0, Live(sys.Slab, cache));
    }

    [Fact]
    public void DisposeAfterTheMemorySystemIsGoneDoesNothing()
    {
        var sys = NewSystem();
        SlabMemoryOwner owner = sys.Slab.RentMemory(64);
        NativeBuffer buffer = sys.Slab.AllocBuffer(64);
        sys.Dispose();
        owner.Dispose();
        buffer.Dispose();
        Assert.Throws<ObjectDisposedException>(owner.Dispose);
    }

    [Fact]
    public void RentAndDisposeAllocateNoManagedBytesInSteadyState()
    {
        using var sys = NewUncheckedSystem();
        SlabAllocator slab = sys.Slab;
        KmemCache cache = slab.CreateCache("managed-zero", 40);
        // A thread context retired and re-created by another test's drain starts its owner stack afresh.
        long Measure(Action body)
        {
            body();
            body();
            return ManagedBytes.LeastOf(3, body);
        }
        long owners = Measure(() =>
        {
            for (int i = 0; i < 100_000; i++)
            {
                IMemoryOwner<byte> owner = slab.RentMemory(64);
                owner.Memory.Span[0] = (byte)i;
                owner.Dispose();
            }
        });
        var live = new SlabMemoryOwner?[100];
        long batches = Measure(() =>
        {
            // More live than a thread's stack holds: the surplus goes to the depot and comes back.
            for (int round = 0; round < 100; round++)
            {
                for (int i = 0; i < live.Length; i++) live[i] = cache.RentMemory();
                for (int i = 0; i < live.Length; i++) live[i]!.Dispose();
            }
        });
        long buffers = Measure(() =>
        {
            for (int i = 0; i < 100_000; i++)
            {
                NativeBuffer buffer = slab.AllocBuffer(64);
                buffer.Span[0] = (byte)i;
                buffer.Free();
            }
        });
        Assert.Equal(0, owners);
        Assert.Equal(0, batches);
        Assert.Equal(0, buffers);
    }
}
