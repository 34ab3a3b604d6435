using Allocators.Native;
using Allocators.Peers;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// malloc+free pairs of one size through each native allocator that loaded: the reference rows for the slab
/// benchmarks, and the example of <see cref="NativeAllocatorColumns"/> (an absent library has no rows).
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class NativeMallocBenchmarks
{
    /// <summary>Pairs per invocation.</summary>
    public const int Pairs = 1024;

    private NativeAllocatorLibrary _library = null!;

    [ParamsSource(nameof(Allocators))]
    public string Allocator { get; set; } = "";

    public static IEnumerable<string> Allocators => NativeAllocatorColumns.Available();

    [Params(64, 4096)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _library = NativeAllocatorColumns.Get(Allocator);
        void* p = _library.Malloc((nuint)Size);
        if (p == null) throw new InvalidOperationException($"{Allocator} malloc({Size}) returned null.");
        _library.Free(p);
    }

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void Malloc_Free()
    {
        var malloc = _library.Malloc;
        var free = _library.Free;
        nuint size = (nuint)Size;
        for (int i = 0; i < Pairs; i++)
        {
            void* p = malloc(size);
            free(p);
        }
    }
}
