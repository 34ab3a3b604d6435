using System.Runtime.CompilerServices;
using Allocators.Mmu;
using Allocators.Native;
using Allocators.PageAlloc;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// The software MMU: a TLB-hit read/write against a raw pointer access, a page walk (TLB miss), a demand-zero fault
/// against touching fresh anonymous memory of the OS, and fork plus first-write copy-on-write of a 64 MiB space.
/// </summary>
[MemoryDiagnoser]
public unsafe class MmuBenchmarks
{
    private const int WalkPages = 4096;      // 16 times the TLB's 256 entries: every access misses
    private const int FaultPages = 256;
    private const int LoopReads = 1024;
    private const ulong CowBytes = 64UL << 20;

    private MemorySystem _system = null!;
    private KernelAddressSpace _kernel = null!;
    private AddressSpace _mm = null!;
    private AddressSpace _forkParent = null!;
    private ulong _va;
    private ulong _walkBase;
    private ulong _cowBase;
    private long* _raw;

    [ThreadStatic] private static long t_value;

    /// <summary>Builds a 512 MiB arena, one process with a hot page, a range for walks, and a 64 MiB populated space.</summary>
    [GlobalSetup]
    public void Setup()
    {
        // Free page reporting off: otherwise freed pages go back to the host and every reuse pays a host page fault,
        // which would measure the OS rather than the MMU.
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 512L << 20 },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false },
        });
        _kernel = new KernelAddressSpace(_system.Pages);
        _mm = new AddressSpace(_kernel, "bench");
        _va = _mm.Mmap(0, 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Populate) + 64;
        _walkBase = _mm.Mmap(0, WalkPages * 4096UL, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Populate);
        _raw = (long*)_system.Pages.PageAddress(_system.Pages.AllocPages(Gfp.Kernel | Gfp.Zero, 0)) + 8;
        _forkParent = new AddressSpace(_kernel, "fork-parent");
        _cowBase = _forkParent.Mmap(0, CowBytes, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Populate);
        _mm.Write<long>(_va, 1);
        t_value = 1;
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _forkParent.Dispose();
        _mm.Dispose();
        _system.Pages.FreePage(_system.Pages.VirtToPage(_raw));
        _kernel.Dispose();
        _system.Dispose();
    }

    /// <summary>Baseline: an 8-byte read through a plain pointer.</summary>
    [Benchmark(Baseline = true)]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public long RawPointerRead() => Volatile.Read(ref *_raw);

    /// <summary>Reference point: one [ThreadStatic] read, the lookup that finds the thread's TLB.</summary>
    [Benchmark]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public long ThreadStaticRead() => t_value;

    /// <summary>An 8-byte read through the MMU that hits the TLB.</summary>
    [Benchmark]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public long TlbHitRead() => _mm.Read<long>(_va);

    /// <summary>An 8-byte write through a plain pointer.</summary>
    [Benchmark]
    public void RawPointerWrite() => Volatile.Write(ref *_raw, 2);

    /// <summary>An 8-byte write through the MMU that hits the TLB.</summary>
    [Benchmark]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void TlbHitWrite() => _mm.Write<long>(_va, 2);

    /// <summary>1024 reads of the same 8 bytes through a plain pointer (loop baseline).</summary>
    [Benchmark(OperationsPerInvoke = LoopReads)]
    public long RawPointerReadLoop()
    {
        long sum = 0;
        long* p = _raw;
        for (int i = 0; i < LoopReads; i++) sum += Volatile.Read(ref *p);
        return sum;
    }

    /// <summary>1024 TLB-hit reads with <see cref="VirtualAddressSpace.Read{T}"/> in a loop.</summary>
    [Benchmark(OperationsPerInvoke = LoopReads)]
    public long TlbHitReadLoop()
    {
        long sum = 0;
        AddressSpace mm = _mm;
        ulong va = _va;
        for (int i = 0; i < LoopReads; i++) sum += mm.Read<long>(va);
        return sum;
    }

    /// <summary>1024 writes through a plain pointer (loop baseline).</summary>
    [Benchmark(OperationsPerInvoke = LoopReads)]
    public void RawPointerWriteLoop()
    {
        long* p = _raw;
        for (int i = 0; i < LoopReads; i++) Volatile.Write(ref *p, i);
    }

    /// <summary>1024 TLB-hit writes with <see cref="VirtualAddressSpace.Write{T}"/> in a loop.</summary>
    [Benchmark(OperationsPerInvoke = LoopReads)]
    public void TlbHitWriteLoop()
    {
        AddressSpace mm = _mm;
        ulong va = _va;
        for (int i = 0; i < LoopReads; i++) mm.Write<long>(va, i);
    }

    /// <summary>1024 TLB-hit reads through an <see cref="AddressSpaceAccessor"/> (no thread-local lookup).</summary>
    [Benchmark(OperationsPerInvoke = LoopReads)]
    public long AccessorReadLoop()
    {
        long sum = 0;
        var acc = _mm.GetAccessor();
        ulong va = _va;
        for (int i = 0; i < LoopReads; i++) sum += acc.Read<long>(va);
        return sum;
    }

    /// <summary>Reads that all miss the TLB (4096 pages round robin): a four-level walk each, plus the TLB fill.</summary>
    [Benchmark(OperationsPerInvoke = WalkPages)]
    public long PageWalkMiss()
    {
        long sum = 0;
        for (int i = 0; i < WalkPages; i++) sum += _mm.Read<long>(_walkBase + (ulong)i * 4096);
        return sum;
    }

    /// <summary>mmap 1 MiB, write one byte per page (a demand-zero fault each: allocate, zero, map), munmap.</summary>
    [Benchmark(OperationsPerInvoke = FaultPages)]
    public void DemandZeroFault()
    {
        ulong a = _mm.Mmap(0, FaultPages * 4096UL, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        for (int i = 0; i < FaultPages; i++) _mm.Write<byte>(a + (ulong)i * 4096, 1);
        _mm.Munmap(a, FaultPages * 4096UL);
    }

    /// <summary>The same with the OS: mmap anonymous memory, write one byte per page, munmap.</summary>
    [Benchmark(OperationsPerInvoke = FaultPages)]
    public void OsDemandZeroFault()
    {
        nuint length = FaultPages * 4096;
        byte* p = (byte*)Libc.Mmap(null, length, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        for (int i = 0; i < FaultPages; i++) p[i * 4096] = 1;
        Libc.Munmap(p, length);
    }

    /// <summary>Fork a 64 MiB populated space, write one byte to every page of the child (copy-on-write), exit the child.</summary>
    [Benchmark]
    public void ForkAndCowWrite64MiB()
    {
        using var child = _forkParent.Fork();
        for (ulong off = 0; off < CowBytes; off += 4096) child.Write<byte>(_cowBase + off, 1);
    }

    /// <summary>Only the fork and exit of the 64 MiB space (no writes).</summary>
    [Benchmark]
    public void Fork64MiB()
    {
        using var child = _forkParent.Fork();
        Unsafe.SkipInit(out int _);
    }
}
