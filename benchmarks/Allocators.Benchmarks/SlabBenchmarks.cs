using System.Buffers;
using System.Runtime.CompilerServices;
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

    [Benchmark(OperationsPerInvoke = Batch)]
    public void Immediate()
    {
        nuint size = (nuint)Size;
        switch (Allocator)
        {
            case "kmalloc": ImmediateKmalloc(_system.Slab, size); break;
            case "kmem_cache": ImmediateCache(_cache); break;
            case "kmalloc ThisThread": ImmediateKmallocHandle(_system.Slab, size); break;
            case "kmem_cache ThisThread": ImmediateCacheHandle(_cache); break;
            case "ArrayPool": ImmediateArrayPool(Size); break;
            case "NativeMemory": ImmediateNativeMemory(size); break;
            default: ImmediateNative(_native!.Malloc, _native.Free, size); break;
        }
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void BatchShuffled()
    {
        nuint size = (nuint)Size;
        switch (Allocator)
        {
            case "kmalloc": BatchKmalloc(_system.Slab, size, _blocks, _order); break;
            case "kmem_cache": BatchCache(_cache, _blocks, _order); break;
            case "kmalloc ThisThread": BatchKmallocHandle(_system.Slab, size, _blocks, _order); break;
            case "kmem_cache ThisThread": BatchCacheHandle(_cache, _blocks, _order); break;
            case "ArrayPool": BatchArrayPool(Size, _arrays, _order); break;
            case "NativeMemory": BatchNativeMemory(size, _blocks, _order); break;
            default: BatchNative(_native!.Malloc, _native.Free, size, _blocks, _order); break;
        }
    }

    // One method per contender and pattern: each loop gets the JIT's whole inlining budget, as a caller's own loop
    // would, instead of sharing one method's budget with the other contenders' inlined paths.

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateKmalloc(SlabAllocator slab, nuint size)
    {
        for (int i = 0; i < Batch; i++) slab.Kfree(slab.Kmalloc(size));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateCache(KmemCache cache)
    {
        for (int i = 0; i < Batch; i++) cache.Free(cache.Alloc());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateKmallocHandle(SlabAllocator slab, nuint size)
    {
        var k = slab.ThisThread();
        for (int i = 0; i < Batch; i++) k.Kfree(k.Kmalloc(size));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateCacheHandle(KmemCache cache)
    {
        var c = cache.ThisThread();
        for (int i = 0; i < Batch; i++) c.Free(c.Alloc());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateArrayPool(int size)
    {
        var pool = ArrayPool<byte>.Shared;
        for (int i = 0; i < Batch; i++) pool.Return(pool.Rent(size));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateNativeMemory(nuint size)
    {
        for (int i = 0; i < Batch; i++) NativeMemory.Free(NativeMemory.Alloc(size));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ImmediateNative(delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> malloc,
        delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> free, nuint size)
    {
        for (int i = 0; i < Batch; i++) free(malloc(size));
    }

    // The batch loops fill all of `blocks` and free in `order`: SlabLiveSetBenchmarks runs them on its live sets.

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void BatchKmalloc(SlabAllocator slab, nuint size, nint[] blocks, int[] order)
    {
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)slab.Kmalloc(size);
        foreach (int i in order) slab.Kfree((void*)blocks[i]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void BatchCache(KmemCache cache, nint[] blocks, int[] order)
    {
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)cache.Alloc();
        foreach (int i in order) cache.Free((void*)blocks[i]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BatchKmallocHandle(SlabAllocator slab, nuint size, nint[] blocks, int[] order)
    {
        var k = slab.ThisThread();
        for (int i = 0; i < Batch; i++) blocks[i] = (nint)k.Kmalloc(size);
        foreach (int i in order) k.Kfree((void*)blocks[i]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BatchCacheHandle(KmemCache cache, nint[] blocks, int[] order)
    {
        var c = cache.ThisThread();
        for (int i = 0; i < Batch; i++) blocks[i] = (nint)c.Alloc();
        foreach (int i in order) c.Free((void*)blocks[i]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BatchArrayPool(int size, byte[]?[] arrays, int[] order)
    {
        var pool = ArrayPool<byte>.Shared;
        for (int i = 0; i < Batch; i++) arrays[i] = pool.Rent(size);
        foreach (int i in order) { pool.Return(arrays[i]!); arrays[i] = null; }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BatchNativeMemory(nuint size, nint[] blocks, int[] order)
    {
        for (int i = 0; i < Batch; i++) blocks[i] = (nint)NativeMemory.Alloc(size);
        foreach (int i in order) NativeMemory.Free((void*)blocks[i]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void BatchNative(delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> malloc,
        delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> free, nuint size, nint[] blocks, int[] order)
    {
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)malloc(size);
        foreach (int i in order) free((void*)blocks[i]);
    }
}
