using Allocators.Filemap;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// First touch of a file mapping whose pages are all in the page cache (filemap_fault's minor path: lookup, page
/// lock, map) against the anonymous demand-zero fault (allocate, zero, map). Each benchmark maps 1 MiB, touches one
/// byte per page and unmaps, so the Mean is the cost of one fault plus its share of mmap and munmap. The goal: a
/// cached file fault within 2x of a demand-zero fault.
/// </summary>
[Config(typeof(BenchConfig))]
public class FilemapMmuBenchmarks
{
    private const int FaultPages = 256;
    private const ulong Length = FaultPages * 4096UL;

    private string _dir = null!;
    private MemorySystem _system = null!;
    private AddressSpace _mm = null!;
    private FileMapping _file = null!;

    /// <summary>A 256 MiB arena, one process, and a 1 MiB file read whole into the page cache.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("allocators-bench-fmmap-").FullName;
        string path = Path.Combine(_dir, "mapped.bin");
        var data = new byte[Length];
        new Random(1).NextBytes(data);
        File.WriteAllBytes(path, data);
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 256L << 20 },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false },
        });
        _mm = _system.CreateAddressSpace();
        _file = _system.PageCache.Open(path);
        _file.Read(0, data); // every page cached: the faults below are all minor
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _mm.Dispose();
        _file.Dispose();
        _system.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Baseline: anonymous memory, a write per page (demand-zero fault: allocate, zero, map).</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = FaultPages)]
    public void AnonDemandZeroFault()
    {
        ulong a = _mm.Mmap(0, Length, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        for (int i = 0; i < FaultPages; i++) _mm.Write<byte>(a + (ulong)i * 4096, 1);
        _mm.Munmap(a, Length);
    }

    /// <summary>A shared file mapping, a read per page: the cache page itself is mapped read-only.</summary>
    [Benchmark(OperationsPerInvoke = FaultPages)]
    public byte CachedFileReadFault()
    {
        ulong a = _mm.Mmap(0, Length, MemoryProtection.ReadWrite, MapFlags.Shared, _file, 0);
        byte sum = 0;
        for (int i = 0; i < FaultPages; i++) sum += _mm.Read<byte>(a + (ulong)i * 4096);
        _mm.Munmap(a, Length);
        return sum;
    }

    /// <summary>A shared file mapping, a write per page: mapped writable and dirty, the page marked dirty.</summary>
    [Benchmark(OperationsPerInvoke = FaultPages)]
    public void CachedFileSharedWriteFault()
    {
        ulong a = _mm.Mmap(0, Length, MemoryProtection.ReadWrite, MapFlags.Shared, _file, 0);
        for (int i = 0; i < FaultPages; i++) _mm.Write<byte>(a + (ulong)i * 4096, 1);
        _mm.Munmap(a, Length);
    }

    /// <summary>A private file mapping, a write per page: the cache page is copied into a new anonymous page.</summary>
    [Benchmark(OperationsPerInvoke = FaultPages)]
    public void CachedFilePrivateWriteFault()
    {
        ulong a = _mm.Mmap(0, Length, MemoryProtection.ReadWrite, MapFlags.Private, _file, 0);
        for (int i = 0; i < FaultPages; i++) _mm.Write<byte>(a + (ulong)i * 4096, 1);
        _mm.Munmap(a, Length);
    }
}
