using Allocators.Peers;
using Allocators.Physical;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// The cost of a pair as the live set grows: each invocation allocates 100,000, 1,000,000 or 10,000,000 64-byte blocks, then
/// frees them all in a random order (one permutation drawn at set-up), through the plain calls (kmalloc/kfree, a
/// KmemCache's Alloc/Free) and every native allocator that loaded; ns per alloc+free pair. The metadata a free
/// touches decides this once the live set outgrows the caches: 100,000 blocks are 6.4 MB, 10,000,000 are 640 MB.
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class SlabLiveSetBenchmarks
{
    private const int Size = 64;

    private MemorySystem? _system;
    private KmemCache? _cache;
    private NativeAllocatorLibrary? _native;
    private nint[] _blocks = null!;
    private int[] _order = null!;

    /// <summary>Who allocates: Allocators' plain calls, then the native allocators that loaded.</summary>
    [ParamsSource(nameof(Contenders))]
    public string Allocator { get; set; } = "";

    /// <summary>The contenders.</summary>
    public static IEnumerable<string> Contenders => NativeAllocatorColumns.Available(["kmalloc", "kmem_cache"]);

    private const int Largest = 10_000_000;

    // One set-up per live-set size (the random order is drawn outside the measurement).

    [GlobalSetup(Target = nameof(Live100K))]
    public void Setup100K() => Setup(100_000);

    [GlobalSetup(Target = nameof(Live1M))]
    public void Setup1M() => Setup(1_000_000);

    [GlobalSetup(Target = nameof(Live10M))]
    public void Setup10M() => Setup(Largest);

    private void Setup(int live)
    {
        if (NativeAllocatorColumns.IsNative(Allocator))
        {
            _native = NativeAllocatorColumns.Get(Allocator);
        }
        else
        {
            // Room for the largest live set (640 MB of objects plus slab slack) in a flat arena.
            _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 1L << 30 } });
            _cache = _system.Slab.CreateCache($"live-{Size}", Size);
        }
        _blocks = new nint[live];
        _order = Enumerable.Range(0, live).ToArray();
        new Random(42).Shuffle(_order);
    }

    [GlobalCleanup]
    public void Cleanup() => _system?.Dispose();

    // One method per live-set size, so that BenchmarkDotNet's Mean is ns per pair (OperationsPerInvoke is a constant).

    /// <summary>100,000 live blocks (6.4 MB).</summary>
    [Benchmark(OperationsPerInvoke = 100_000)]
    public void Live100K() => Run();

    /// <summary>1,000,000 live blocks (64 MB).</summary>
    [Benchmark(OperationsPerInvoke = 1_000_000)]
    public void Live1M() => Run();

    /// <summary>10,000,000 live blocks (640 MB).</summary>
    [Benchmark(OperationsPerInvoke = Largest)]
    public void Live10M() => Run();

    /// <summary>One invocation on the live set the set-up sized the arrays for, through SlabBenchmarks' batch loops.</summary>
    private void Run()
    {
        switch (Allocator)
        {
            case "kmalloc": SlabBenchmarks.BatchKmalloc(_system!.Slab, Size, _blocks, _order); break;
            case "kmem_cache": SlabBenchmarks.BatchCache(_cache!, _blocks, _order); break;
            default: SlabBenchmarks.BatchNative(_native!.Malloc, _native.Free, Size, _blocks, _order); break;
        }
    }
}
