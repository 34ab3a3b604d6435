using System.Runtime.InteropServices;
using Allocators.Mmu;
using Allocators.Native;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Vmalloc;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace Allocators.Benchmarks;

/// <summary>
/// vmalloc of <see cref="Size"/> bytes, in two groups (categories), one operation per invocation, so the Mean column
/// is nanoseconds per operation as the method name spells it out.
/// <list type="bullet">
/// <item>AllocFree: one vmalloc+vfree pair on the plain arena and on the memfd arena (where vmalloc also maps the
/// area into the host window, one mmap per run of physically contiguous frames, and vfree puts the reservation back
/// with one more), against NativeMemory.Alloc/Free (the baseline) and anonymous private mmap/munmap of the same size.</item>
/// <item>FirstTouch: allocate, write one byte to every 4 KiB page, free. The same vmalloc area on the memfd arena is
/// touched once through its real contiguous host mapping and once through the software MMU (kernel page tables);
/// fresh anonymous mmap memory of the OS (a demand-zero fault per page) is the baseline. Subtracting the matching
/// AllocFree row leaves the cost of the touches alone.</item>
/// </list>
/// vfree is lazy: the area is unmapped and its pages are freed at once, but its address range waits for a batched
/// purge (a TLB flush over the span of every waiting range, then the ranges go back to the free tree). That purge
/// runs inside some of the measured vfree calls and is part of the cost shown.
/// </summary>
[Config(typeof(BenchConfig))]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public unsafe class VmallocBenchmarks
{
    private const string AllocFree = "AllocFree";
    private const string FirstTouch = "FirstTouch";
    private const int TouchStride = 4096;

    private MemorySystem _plain = null!;
    private MemorySystem _memFd = null!;
    private VmallocAllocator _plainVmalloc = null!;
    private VmallocAllocator _memFdVmalloc = null!;
    private KernelAddressSpace _memFdKernel = null!;

    /// <summary>Bytes per allocation: one page, 16 pages, 256 pages.</summary>
    [Params(4096, 65536, 1048576)]
    public int Size { get; set; }

    /// <summary>Builds two 128 MiB systems (NativeMemory and memfd arenas) and checks that every contender really allocates.</summary>
    [GlobalSetup]
    public void Setup()
    {
        // Free page reporting off: with it, freed vmalloc pages that merge into max-order blocks are given back to
        // the host (MADV_DONTNEED, or a hole punch in the memfd), and the next use of them pays a host fault that
        // allocates and zeroes a page. The numbers would then mix the OS's page allocation into vmalloc's, and on the
        // memfd arena a touch through the host mapping would sometimes find the page resident and sometimes not.
        _plain = CreateSystem(ArenaBacking.NativeMemory);
        _memFd = CreateSystem(ArenaBacking.MemFd);
        _plainVmalloc = _plain.Vmalloc;
        _memFdVmalloc = _memFd.Vmalloc;
        _memFdKernel = _memFdVmalloc.Kernel;
        if (!_memFdVmalloc.HasHostMappings) throw new InvalidOperationException("The memfd arena has no vmalloc host window.");

        // Each contender must really hand out memory; a 0 or null would make its numbers meaningless.
        CheckVmalloc(_plainVmalloc, hostMapped: false);
        CheckVmalloc(_memFdVmalloc, hostMapped: true);
        void* p = NativeMemory.Alloc((nuint)Size);
        if (p == null) throw new InvalidOperationException($"NativeMemory.Alloc({Size}) failed.");
        NativeMemory.Free(p);
        Libc.Munmap(MmapAnonymous(), (nuint)Size);
    }

    private static MemorySystem CreateSystem(ArenaBacking backing) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 128L << 20, Backing = backing },
        PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false },
    });

    private void CheckVmalloc(VmallocAllocator vmalloc, bool hostMapped)
    {
        ulong va = vmalloc.Vmalloc((ulong)Size);
        if (va == 0) throw new InvalidOperationException($"vmalloc({Size}) failed.");
        if (hostMapped && vmalloc.HostPointer(va) == null) throw new InvalidOperationException($"vmalloc({Size}) on the memfd arena has no host mapping.");
        vmalloc.Vfree(va);
    }

    private byte* MmapAnonymous()
    {
        void* p = Libc.Mmap(null, (nuint)Size, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (p == Libc.MapFailed) throw new InvalidOperationException($"mmap of {Size} bytes failed: errno {Marshal.GetLastPInvokeError()}.");
        return (byte*)p;
    }

    /// <summary>Releases both systems; every benchmark frees what it allocates, and disposing vmalloc purges the lazily freed ranges.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _memFd.Dispose();
        _plain.Dispose();
    }

    /// <summary>vmalloc+vfree on the NativeMemory arena: address range, pages one by one, kernel page table entries; vfree undoes it.</summary>
    [Benchmark, BenchmarkCategory(AllocFree)]
    public void Vmalloc_Vfree()
    {
        VmallocAllocator vmalloc = _plainVmalloc;
        vmalloc.Vfree(vmalloc.Vmalloc((ulong)Size));
    }

    /// <summary>
    /// The same on the memfd arena: vmalloc also maps the frames into the host window (one mmap MAP_FIXED per run of
    /// physically contiguous frames), vfree puts the PROT_NONE reservation back over the whole area (one mmap).
    /// </summary>
    [Benchmark, BenchmarkCategory(AllocFree)]
    public void Vmalloc_Vfree_MemFd()
    {
        VmallocAllocator vmalloc = _memFdVmalloc;
        vmalloc.Vfree(vmalloc.Vmalloc((ulong)Size));
    }

    /// <summary>Baseline: NativeMemory.Alloc+Free (glibc malloc/free; sizes from 128 KiB up may take mmap).</summary>
    [Benchmark(Baseline = true), BenchmarkCategory(AllocFree)]
    public void NativeMemory_Alloc_Free() => NativeMemory.Free(NativeMemory.Alloc((nuint)Size));

    /// <summary>Anonymous private mmap+munmap; nothing is touched, so no page is ever faulted in.</summary>
    [Benchmark, BenchmarkCategory(AllocFree)]
    public void Mmap_Munmap_Anonymous() => Libc.Munmap(MmapAnonymous(), (nuint)Size);

    /// <summary>
    /// vmalloc on the memfd arena, one byte written per page through the area's contiguous host pointer, vfree.
    /// The host window is mapped afresh by every vmalloc, so each write takes a host page fault that maps the frame's
    /// memfd page (already resident: reporting is off), without allocating or zeroing one.
    /// </summary>
    [Benchmark, BenchmarkCategory(FirstTouch)]
    public void Vmalloc_TouchHostMapping_Vfree()
    {
        VmallocAllocator vmalloc = _memFdVmalloc;
        ulong va = vmalloc.Vmalloc((ulong)Size);
        byte* p = vmalloc.HostPointer(va);
        for (int off = 0; off < Size; off += TouchStride) p[off] = 1;
        vmalloc.Vfree(va);
    }

    /// <summary>
    /// The same area touched through the software MMU: one kernel-space write per page, each a TLB miss, a four-level
    /// walk of the kernel page tables and a TLB fill (vmalloc maps every page up front, so there is no fault).
    /// </summary>
    [Benchmark, BenchmarkCategory(FirstTouch)]
    public void Vmalloc_TouchThroughMmu_Vfree()
    {
        VmallocAllocator vmalloc = _memFdVmalloc;
        KernelAddressSpace kernel = _memFdKernel;
        ulong va = vmalloc.Vmalloc((ulong)Size);
        for (int off = 0; off < Size; off += TouchStride) kernel.Write<byte>(va + (ulong)off, 1);
        vmalloc.Vfree(va);
    }

    /// <summary>Baseline: fresh anonymous mmap memory of the OS, one byte written per page (a demand-zero fault each: allocate, zero, map), munmap.</summary>
    [Benchmark(Baseline = true), BenchmarkCategory(FirstTouch)]
    public void Mmap_Touch_Munmap()
    {
        byte* p = MmapAnonymous();
        for (int off = 0; off < Size; off += TouchStride) p[off] = 1;
        Libc.Munmap(p, (nuint)Size);
    }
}
