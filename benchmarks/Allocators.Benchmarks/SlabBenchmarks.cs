using System.Buffers;
using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;
using Allocators.Physical;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// Alloc+free pairs of one size, side by side in one run: kmalloc, a KmemCache of that size (each also through the
/// thread's handle, taken once per invocation of 1000 pairs), NativeMemory, ArrayPool
/// and every native allocator that loaded. "Immediate" frees each block at once; "Batch" allocates 1000 blocks and
/// frees them in a shuffled order (ns per pair in both).
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class SlabBenchmarks
{
    private const int Batch = 1000;

    private MemorySystem _system = null!;
    private KmemCache _cache = null!;
    private NativeAllocatorLibrary? _native;
    private readonly nint[] _blocks = new nint[Batch];
    private readonly byte[]?[] _arrays = new byte[Batch][];
    private int[] _order = null!;

    /// <summary>Who allocates: managed contenders first, then the native allocators that loaded.</summary>
    [ParamsSource(nameof(Contenders))]
    public string Allocator { get; set; } = "";

    /// <summary>The contenders.</summary>
    public static IEnumerable<string> Contenders => NativeAllocatorColumns.Available(["kmalloc", "kmalloc ThisThread", "kmem_cache", "kmem_cache ThisThread", "NativeMemory", "ArrayPool"]);

    /// <summary>Block size in bytes.</summary>
    [ParamsSource(nameof(Sizes))]
    public int Size { get; set; }

    /// <summary>16, 64, 256, 1024 and 4096 bytes, or the comma-separated list in ALLOCATORS_BENCH_SIZES (e.g. "64" for a quick table).</summary>
    public static IEnumerable<int> Sizes
        => Environment.GetEnvironmentVariable("ALLOCATORS_BENCH_SIZES") is { Length: > 0 } list
            ? list.Split(',').Select(int.Parse)
            : [16, 64, 256, 1024, 4096];

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20 } });
        _cache = _system.Slab.CreateCache($"bench-{Size}", Size);
        if (NativeAllocatorColumns.IsNative(Allocator)) _native = NativeAllocatorColumns.Get(Allocator);
        _order = Enumerable.Range(0, Batch).OrderBy(i => (i * 7919) % Batch).ToArray();
    }

    [GlobalCleanup]
    public void Cleanup() => _system.Dispose();

    private void* Alloc()
    {
        switch (Allocator)
        {
            case "kmalloc": return _system.Slab.Kmalloc((nuint)Size);
            case "kmem_cache": return _cache.Alloc();
            case "NativeMemory": return NativeMemory.Alloc((nuint)Size);
            default: return _native!.Malloc((nuint)Size);
        }
    }

    private void Free(void* p)
    {
        switch (Allocator)
        {
            case "kmalloc": _system.Slab.Kfree(p); break;
            case "kmem_cache": _cache.Free(p); break;
            case "NativeMemory": NativeMemory.Free(p); break;
            default: _native!.Free(p); break;
        }
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void Immediate()
    {
        switch (Allocator)
        {
            case "kmalloc":
                var slab = _system.Slab;
                for (int i = 0; i < Batch; i++) slab.Kfree(slab.Kmalloc((nuint)Size));
                break;
            case "kmem_cache":
                var cache = _cache;
                for (int i = 0; i < Batch; i++) cache.Free(cache.Alloc());
                break;
            case "kmalloc ThisThread":
                var k = _system.Slab.ThisThread();
                for (int i = 0; i < Batch; i++) k.Kfree(k.Kmalloc((nuint)Size));
                break;
            case "kmem_cache ThisThread":
                var c = _cache.ThisThread();
                for (int i = 0; i < Batch; i++) c.Free(c.Alloc());
                break;
            case "ArrayPool":
                var pool = ArrayPool<byte>.Shared;
                for (int i = 0; i < Batch; i++) pool.Return(pool.Rent(Size));
                break;
            case "NativeMemory":
                for (int i = 0; i < Batch; i++) NativeMemory.Free(NativeMemory.Alloc((nuint)Size));
                break;
            default:
                var malloc = _native!.Malloc;
                var free = _native.Free;
                for (int i = 0; i < Batch; i++) free(malloc((nuint)Size));
                break;
        }
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void BatchShuffled()
    {
        if (Allocator == "ArrayPool")
        {
            var pool = ArrayPool<byte>.Shared;
            for (int i = 0; i < Batch; i++) _arrays[i] = pool.Rent(Size);
            foreach (int i in _order) { pool.Return(_arrays[i]!); _arrays[i] = null; }
            return;
        }
        if (Allocator == "kmalloc ThisThread")
        {
            var k = _system.Slab.ThisThread();
            for (int i = 0; i < Batch; i++) _blocks[i] = (nint)k.Kmalloc((nuint)Size);
            foreach (int i in _order) k.Kfree((void*)_blocks[i]);
            return;
        }
        if (Allocator == "kmem_cache ThisThread")
        {
            var c = _cache.ThisThread();
            for (int i = 0; i < Batch; i++) _blocks[i] = (nint)c.Alloc();
            foreach (int i in _order) c.Free((void*)_blocks[i]);
            return;
        }
        for (int i = 0; i < Batch; i++) _blocks[i] = (nint)Alloc();
        foreach (int i in _order) Free((void*)_blocks[i]);
    }
}
