using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// What KASAN's checked mode costs: the same operations with it off and on. A 64-byte slab object allocated and freed
/// back to back (pair) and in batches of 1000 (allocated, then freed in the same order), and an order-0 page pair.
/// With KASAN on a slab pair also pays for the quarantine (the object really goes back later), the shadow updates,
/// both tracks' call sites (a managed stack walk each) and the locked debug path. Mean is per operation.
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class KasanBenchmarks
{
    private const int Pairs = 1024;
    private const int Batch = 1000;
    private readonly nint[] _blocks = new nint[Batch];
    private MemorySystem _system = null!;
    private KmemCache _cache = null!;

    /// <summary>KASAN off (the plain paths) or on.</summary>
    [Params(false, true)]
    public bool Kasan { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Checks = new CheckedModeOptions { Kasan = Kasan } },
        });
        _cache = _system.Slab.CreateCache("bench-64", 64);
    }

    [GlobalCleanup]
    public void Cleanup() => _system.Dispose();

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void Slab64_Pair()
    {
        KmemCache cache = _cache;
        for (int i = 0; i < Pairs; i++) cache.Free(cache.Alloc());
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void Slab64_Batch()
    {
        KmemCache cache = _cache;
        nint[] blocks = _blocks;
        for (int i = 0; i < Batch; i++) blocks[i] = (nint)cache.Alloc();
        for (int i = 0; i < Batch; i++) cache.Free((void*)blocks[i]);
    }

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void Page_Pair()
    {
        PageAllocator pages = _system.Pages;
        for (int i = 0; i < Pairs; i++) pages.FreePages(pages.AllocPages(Gfp.Kernel, 0), 0);
    }
}
