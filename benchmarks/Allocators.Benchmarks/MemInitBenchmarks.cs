using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// The cost of each hardening mode of <see cref="CheckedModeOptions"/> (init_on_alloc, init_on_free, slab freelist
/// randomisation, page shuffling) against the modes off, in one run: kmalloc(64)/kfree and order-0
/// AllocPages/FreePages, as back-to-back pairs and as batches of 1000 allocations then 1000 frees (freed in a
/// scattered order). Mean is nanoseconds per alloc+free pair.
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class MemInitBenchmarks
{
    private const int Batch = 1000;

    private MemorySystem _system = null!;
    private SlabAllocator _slab = null!;
    private PageAllocator _pages = null!;
    private readonly nint[] _blocks = new nint[Batch];
    private int[] _order = null!;

    /// <summary>The mode turned on (one at a time).</summary>
    [Params("off", "init_on_alloc", "init_on_free", "slab_freelist_random", "page_alloc.shuffle")]
    public string Mode { get; set; } = "off";

    [GlobalSetup]
    public void Setup()
    {
        var checks = new CheckedModeOptions
        {
            InitOnAlloc = Mode == "init_on_alloc",
            InitOnFree = Mode == "init_on_free",
            SlabFreelistRandom = Mode == "slab_freelist_random",
            ShufflePages = Mode == "page_alloc.shuffle",
        };
        _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 256L << 20, Checks = checks } });
        _slab = _system.Slab;
        _pages = _system.Pages;
        _order = Enumerable.Range(0, Batch).OrderBy(i => (i * 7919) % Batch).ToArray();
    }

    [GlobalCleanup]
    public void Cleanup() => _system.Dispose();

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public void Kmalloc64_Pair()
    {
        SlabAllocator slab = _slab;
        for (int i = 0; i < Batch; i++) slab.Kfree(slab.Kmalloc(64));
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void Kmalloc64_Batch()
    {
        SlabAllocator slab = _slab;
        nint[] blocks = _blocks;
        for (int i = 0; i < Batch; i++) blocks[i] = (nint)slab.Kmalloc(64);
        foreach (int i in _order) slab.Kfree((void*)blocks[i]);
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void Pages0_Pair()
    {
        PageAllocator pages = _pages;
        for (int i = 0; i < Batch; i++) pages.FreePages(pages.AllocPages(Gfp.Kernel, 0), 0);
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public void Pages0_Batch()
    {
        PageAllocator pages = _pages;
        nint[] blocks = _blocks;
        for (int i = 0; i < Batch; i++) blocks[i] = (nint)pages.AllocPages(Gfp.Kernel, 0);
        foreach (int i in _order) pages.FreePages((PageFrame*)blocks[i], 0);
    }
}
