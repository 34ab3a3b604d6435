using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Peers;
using Allocators.PageAlloc;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;

namespace Allocators.Benchmarks;

/// <summary>
/// One alloc+free pair of 2^Order pages, back to back, by each contender: the page allocator (orders 0 and 3 take
/// the per-thread page list fast path, order 9 the buddy lists under the zone lock), NativeMemory.AlignedAlloc with
/// 4 KiB alignment (the baseline), the page allocator through a per-thread handle taken once per invocation, anonymous private mmap/munmap and glibc malloc/free of the same size.
/// Each invocation runs <see cref="Pairs"/> pairs, so the Mean column is nanoseconds per pair. Method names say
/// what one pair is (no Description: quoted names come out HTML-escaped in the markdown summary).
/// </summary>
[Config(typeof(BenchConfig))]
public unsafe class PageAllocBenchmarks
{
    /// <summary>Alloc+free pairs per invocation.</summary>
    public const int Pairs = 1024;

    private MemorySystem _system = null!;
    private PageAllocator _pages = null!;
    private NativeAllocatorLibrary _glibc = null!;
    private nuint _bytes;

    [Params(0, 3, 9)]
    public int Order { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _system = new MemorySystem();
        _pages = _system.Pages;
        _glibc = NativeAllocatorColumns.Get("glibc");
        _bytes = (nuint)PageFrame.PageSize << Order;

        // Each contender must really hand out memory; a null would make its numbers meaningless.
        PageFrame* page = _pages.AllocPages(Gfp.Kernel, Order);
        if (page == null) throw new InvalidOperationException($"AllocPages(order {Order}) failed.");
        _pages.FreePages(page, Order);
        void* mapped = Libc.Mmap(null, _bytes, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (mapped == Libc.MapFailed) throw new InvalidOperationException($"mmap of {_bytes} bytes failed: errno {Marshal.GetLastPInvokeError()}.");
        Libc.Munmap(mapped, _bytes);
    }

    [GlobalCleanup]
    public void Cleanup() => _system.Dispose();

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void PageAlloc_AllocPages_FreePages()
    {
        PageAllocator pages = _pages;
        int order = Order;
        for (int i = 0; i < Pairs; i++)
        {
            PageFrame* page = pages.AllocPages(Gfp.Kernel, order);
            pages.FreePages(page, order);
        }
    }

    /// <summary>The same pairs through the thread's handle (<see cref="PageAllocator.ThisThread"/>), taken once per invocation.</summary>
    [Benchmark(OperationsPerInvoke = Pairs)]
    public void PageAlloc_ThisThread_AllocPages_FreePages()
    {
        var pages = _pages.ThisThread();
        int order = Order;
        for (int i = 0; i < Pairs; i++)
        {
            PageFrame* page = pages.AllocPages(Gfp.Kernel, order);
            pages.FreePages(page, order);
        }
    }

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void PageAlloc_GetFreePages_FreePagesAddr()
    {
        PageAllocator pages = _pages;
        int order = Order;
        for (int i = 0; i < Pairs; i++)
        {
            byte* address = pages.GetFreePages(Gfp.Kernel, order);
            pages.FreePages(address, order);
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Pairs)]
    public void NativeMemory_AlignedAlloc_4096()
    {
        nuint bytes = _bytes;
        for (int i = 0; i < Pairs; i++)
        {
            void* p = NativeMemory.AlignedAlloc(bytes, PageFrame.PageSize);
            NativeMemory.AlignedFree(p);
        }
    }

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void Mmap_Munmap_Anonymous()
    {
        nuint bytes = _bytes;
        for (int i = 0; i < Pairs; i++)
        {
            void* p = Libc.Mmap(null, bytes, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
            Libc.Munmap(p, bytes);
        }
    }

    [Benchmark(OperationsPerInvoke = Pairs)]
    public void Glibc_Malloc_Free()
    {
        var malloc = _glibc.Malloc;
        var free = _glibc.Free;
        nuint bytes = _bytes;
        for (int i = 0; i < Pairs; i++)
        {
            void* p = malloc(bytes);
            free(p);
        }
    }
}
