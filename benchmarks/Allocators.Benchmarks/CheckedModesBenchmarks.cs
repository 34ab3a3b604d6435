using Allocators.PageAlloc;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// What each checked mode costs the plain calls, side by side in one run against every mode off: kmalloc(64)+kfree
/// and AllocPages(0)+FreePages, each as an immediate pair and as a batch of 1000 allocated then freed in a shuffled
/// order (ns per pair). The mode is written as in ALLOCATORS_CHECKS; timed KFENCE samples at the kernel's default
/// 100 ms, counted KFENCE one allocation in 1000 (set in code: the count runs in the hardened paths).
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class CheckedModesBenchmarks
{
    private const int Batch = 1000;

    private MemorySystem _system = null!;
    private readonly nint[] _blocks = new nint[Batch];
    private int[] _order = null!;

    /// <summary>The mode, in <see cref="CheckedModeOptions.EnvironmentVariable"/>'s syntax ("off": none).</summary>
    [Params("off", "init_on_alloc", "init_on_free", "slab_freelist_random", "page_alloc.shuffle", "kasan", "kasan,kasan.stacktrace=off", "kasan,kasan.stacktrace=off,kasan.page_guards", "kfence.sample_interval=100", "kfence.sample_rate=1000")]
    public string Mode { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 256L << 20,
                Checks = CheckedModeOptions.Parse(Mode == "off" ? "" : Mode),
            },
        });
        _order = Enumerable.Range(0, Batch).OrderBy(i => (i * 7919) % Batch).ToArray();
    }

    [GlobalCleanup]
    public void Cleanup() => _system.Dispose();

    /// <summary>kmalloc(64) and kfree at once, 1000 times.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public void KmallocPair()
    {
        var slab = _system.Slab;
        for (int i = 0; i < Batch; i++) slab.Kfree(slab.Kmalloc(64));
    }

    /// <summary>1000 kmalloc(64), then kfree in a shuffled order.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public void KmallocBatch()
    {
        var slab = _system.Slab;
        for (int i = 0; i < Batch; i++) _blocks[i] = (nint)slab.Kmalloc(64);
        foreach (int i in _order) slab.Kfree((void*)_blocks[i]);
    }

    /// <summary>An order-0 page allocated and freed at once, 1000 times.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public void PagePair()
    {
        var pages = _system.Pages;
        for (int i = 0; i < Batch; i++) pages.FreePages(pages.AllocPages(Gfp.Kernel, 0), 0);
    }

    /// <summary>1000 order-0 pages, then freed in a shuffled order.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public void PageBatch()
    {
        var pages = _system.Pages;
        for (int i = 0; i < Batch; i++) _blocks[i] = (nint)pages.AllocPages(Gfp.Kernel, 0);
        foreach (int i in _order) pages.FreePages((Physical.PageFrame*)_blocks[i], 0);
    }
}
