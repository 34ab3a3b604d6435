using System.Runtime.CompilerServices;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// High memory on a split arena (32 MiB low, 32 MiB high): an 8-byte read of a low page through the direct map
/// (the baseline: what a lowmem page costs a kernel access), kmap_atomic + read + kunmap_atomic of a high page, and
/// kmap + read + kunmap of a high page whose pkmap entry is warm.
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class HighmemBenchmarks
{
    private MemorySystem _system = null!;
    private KernelAddressSpace _kernel = null!;
    private PageFrame* _low;
    private PageFrame* _high;
    private ulong _lowVa;

    /// <summary>A split system with one low and one high page holding a value.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64L << 20, LowMemoryLimit = 32L << 20 } });
        _kernel = _system.Kernel;
        _low = _system.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
        _high = _system.Pages.AllocPages(Gfp.HighUser | Gfp.Zero, 0);
        _lowVa = _kernel.PageAddress(_low);
        *(long*)_system.Pages.AddressOf(_low) = 1;
        *(long*)_system.Pages.AddressOf(_high) = 2;
    }

    /// <summary>Releases the pages and the system.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _system.Pages.FreePages(_low, 0);
        _system.Pages.FreePages(_high, 0);
        _system.Dispose();
    }

    /// <summary>Baseline: a kernel read of a low page at its direct-map address (TLB hit).</summary>
    [Benchmark(Baseline = true)]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public long DirectMapRead() => _kernel.Read<long>(_lowVa);

    /// <summary>kmap_atomic of a high page, an 8-byte read through the fixmap slot, kunmap_atomic.</summary>
    [Benchmark]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public long KmapAtomicRead()
    {
        ulong va = _kernel.KmapAtomic(_high);
        long value = _kernel.Read<long>(va);
        _kernel.KunmapAtomic(va);
        return value;
    }

    /// <summary>kmap of a high page whose pkmap entry is still mapped, a read, kunmap.</summary>
    [Benchmark]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public long KmapWarmRead()
    {
        ulong va = _kernel.Kmap(_high);
        long value = _kernel.Read<long>(va);
        _kernel.Kunmap(_high);
        return value;
    }
}
