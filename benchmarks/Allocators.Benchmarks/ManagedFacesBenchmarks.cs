using System.Buffers;
using Allocators.Managed;
using Allocators.Physical;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace Allocators.Benchmarks;

/// <summary>
/// The safe managed faces (<c>Allocators.Managed</c>) against the raw pointer calls they wrap, side by side in one run,
/// each category with the raw pair as its baseline (target: at most 1.2x). kmalloc-64: <see cref="NativeBuffer"/> and
/// <see cref="SlabMemoryOwner"/> against Kmalloc/Kfree, ns per pair. cache: <see cref="KmemHandle{T}"/> and a cache
/// object's owner against KmemCache&lt;T&gt; Alloc/Free with one field written, ns per pair. writer: 64 KiB written in
/// 1 KiB chunks and read back once, through a new <see cref="NativeBufferWriter"/> against kmalloc-4k segments filled
/// by hand, ns per 64 KiB.
/// </summary>
[Config(typeof(BenchConfig))]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public unsafe class ManagedFacesBenchmarks
{
    private const int Pairs = 1000;
    private const int Size = 64;
    private const int Chunk = 1024;
    private const int Chunks = 64;
    private const int Segment = 4096;

    /// <summary>An object of 32 bytes.</summary>
    public struct Item
    {
        public long Id;
        public long A, B, C;
    }

    private MemorySystem _system = null!;
    private SlabAllocator _slab = null!;
    private KmemCache<Item> _items = null!;
    private readonly byte[] _chunk = new byte[Chunk];
    private readonly nint[] _segments = new nint[Chunks * Chunk / Segment];

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20 } });
        _slab = _system.Slab;
        _items = _slab.CreateCache<Item>("bench-item");
        new Random(1).NextBytes(_chunk);
    }

    [GlobalCleanup]
    public void Cleanup() => _system.Dispose();

    [Benchmark(Baseline = true, OperationsPerInvoke = Pairs), BenchmarkCategory("kmalloc-64")]
    public void Kmalloc_Kfree()
    {
        SlabAllocator slab = _slab;
        for (int i = 0; i < Pairs; i++) slab.Kfree(slab.Kmalloc(Size));
    }

    [Benchmark(OperationsPerInvoke = Pairs), BenchmarkCategory("kmalloc-64")]
    public void NativeBuffer_AllocBuffer_Free()
    {
        SlabAllocator slab = _slab;
        for (int i = 0; i < Pairs; i++) slab.AllocBuffer(Size).Free();
    }

    [Benchmark(OperationsPerInvoke = Pairs), BenchmarkCategory("kmalloc-64")]
    public void SlabMemoryOwner_RentMemory_Dispose()
    {
        SlabAllocator slab = _slab;
        for (int i = 0; i < Pairs; i++) slab.RentMemory(Size).Dispose();
    }

    [Benchmark(OperationsPerInvoke = Pairs), BenchmarkCategory("kmalloc-64")]
    public void SlabMemoryOwner_RentMemory_MemorySpanWrite_Dispose()
    {
        SlabAllocator slab = _slab;
        for (int i = 0; i < Pairs; i++)
        {
            IMemoryOwner<byte> owner = slab.RentMemory(Size);
            owner.Memory.Span[0] = (byte)i;
            owner.Dispose();
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Pairs), BenchmarkCategory("cache")]
    public void KmemCacheOfT_Alloc_Free()
    {
        KmemCache<Item> items = _items;
        for (int i = 0; i < Pairs; i++)
        {
            Item* item = items.Alloc();
            item->Id = i;
            items.Free(item);
        }
    }

    [Benchmark(OperationsPerInvoke = Pairs), BenchmarkCategory("cache")]
    public void KmemHandle_AllocHandle_Free()
    {
        KmemCache<Item> items = _items;
        for (int i = 0; i < Pairs; i++)
        {
            KmemHandle<Item> item = items.AllocHandle();
            item.Value.Id = i;
            item.Free();
        }
    }

    [Benchmark(OperationsPerInvoke = Pairs), BenchmarkCategory("cache")]
    public void CacheObject_RentMemory_Dispose()
    {
        KmemCache cache = _items.Cache;
        for (int i = 0; i < Pairs; i++)
        {
            SlabMemoryOwner item = cache.RentMemory();
            item.Span[0] = (byte)i;
            item.Dispose();
        }
    }

    [Benchmark(Baseline = true), BenchmarkCategory("writer")]
    public long KmallocSegments_FilledByHand()
    {
        SlabAllocator slab = _slab;
        int segments = 0, used = Segment;
        for (int c = 0; c < Chunks; c++)
        {
            ReadOnlySpan<byte> data = _chunk;
            while (!data.IsEmpty)
            {
                if (used == Segment)
                {
                    _segments[segments++] = (nint)slab.Kmalloc(Segment);
                    used = 0;
                }
                int n = Math.Min(Segment - used, data.Length);
                data[..n].CopyTo(new Span<byte>((byte*)_segments[segments - 1] + used, n));
                used += n;
                data = data[n..];
            }
        }
        long sum = 0;
        for (int s = 0; s < segments; s++) sum += new ReadOnlySpan<byte>((byte*)_segments[s], s == segments - 1 ? used : Segment)[^1];
        for (int s = 0; s < segments; s++) slab.Kfree((void*)_segments[s]);
        return sum;
    }

    [Benchmark, BenchmarkCategory("writer")]
    public long NativeBufferWriter_Write_AsSequence_Dispose()
    {
        using var writer = new NativeBufferWriter(_slab);
        for (int c = 0; c < Chunks; c++) writer.Write(_chunk);
        long sum = 0;
        foreach (ReadOnlyMemory<byte> segment in writer.AsSequence()) sum += segment.Span[^1];
        return sum;
    }
}
