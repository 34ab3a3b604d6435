using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.Diagnostics;

/// <summary>
/// Makes a system give each kind of report once, for the tests of what receives them (event source, loggers). Each
/// leaves the system as it found it, and every report has been delivered when it returns.
/// </summary>
internal static unsafe class ReportTriggers
{
    /// <summary>A request above MAX_PAGE_ORDER: fails at once with a "page allocation failure" warning.</summary>
    public static void FailAllocation(MemorySystem sys)
        => Assert.True(sys.Pages.AllocPages(Gfp.Kernel, PageAllocator.MaxOrder + 1) == null, "the order-11 request succeeded");

    /// <summary>NoFail above order 1: succeeds, with the allocator's one-time misuse warning.</summary>
    public static void WarnMisuse(MemorySystem sys)
    {
        PageFrame* page = sys.Pages.AllocPages(Gfp.Kernel | Gfp.NoFail, 2);
        sys.Pages.FreePages(page, 2);
    }

    /// <summary>Allocates every page (without warnings) and frees them again: the last request runs the shrinkers.</summary>
    public static void RunShrinkers(MemorySystem sys)
    {
        foreach (nint p in AllocateUntilFailure(sys.Pages, Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn)) sys.Pages.FreePages((PageFrame*)p, 0);
    }

    /// <summary>
    /// Holds every page while a NoFail request waits on another thread until a stall is reported (the system's stall
    /// interval should be short), then frees them so that it completes.
    /// </summary>
    public static void Stall(MemorySystem sys)
    {
        PageAllocator pa = sys.Pages;
        List<nint> all = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn);
        long stalls = pa.AllocStalls;
        nint got = 0;
        var waiter = new Thread(() => Volatile.Write(ref got, (nint)pa.AllocPages(Gfp.Kernel | Gfp.NoFail, 0))) { IsBackground = true };
        waiter.Start();
        try
        {
            Assert.True(SpinWait.SpinUntil(() => pa.AllocStalls > stalls, TimeSpan.FromSeconds(10)), "no stall reported");
        }
        finally
        {
            foreach (nint p in all) pa.FreePages((PageFrame*)p, 0);
            // The waiter reports on its own thread: once it has its page, every report has been delivered.
            Assert.True(waiter.Join(TimeSpan.FromSeconds(10)), "the NoFail request did not complete after the pages were freed");
        }
        pa.FreePages((PageFrame*)got, 0);
    }

    /// <summary>Overwrites the right red zone of an object of a debug cache; its free finds, reports and repairs it.</summary>
    /// <returns>The cache's name.</returns>
    public static string CorruptRedZone(MemorySystem sys)
    {
        const int size = 100;
        using KmemCache cache = sys.Slab.CreateCache("trigger-100", size, 0, SlabFlags.Debug);
        byte* p = (byte*)cache.Alloc();
        p[size] = 0;
        cache.Free(p);
        Assert.Equal(1, cache.CorruptionsFound);
        return cache.Name;
    }

    /// <summary>Frees an object of a plain (non-debug) cache twice: the second free is refused as a double free.</summary>
    /// <returns>What the second free threw; <paramref name="address"/> is the object's.</returns>
    public static MemoryCorruptionException DoubleFree(MemorySystem sys, out nuint address)
    {
        using KmemCache cache = sys.Slab.CreateCache("trigger-double-free", 64);
        nint p = (nint)cache.Alloc();
        cache.Free((void*)p);
        address = (nuint)p;
        return Assert.Throws<MemoryCorruptionException>(() => cache.Free((void*)p));
    }

    /// <summary>Frees an order-0 page twice: the second free is refused as a bad page (it is on a per-thread list).</summary>
    /// <returns>What the second free threw.</returns>
    public static BadPageException DoublePageFree(MemorySystem sys)
    {
        nint page = (nint)sys.Pages.AllocPages(Gfp.Kernel, 0);
        sys.Pages.FreePages((PageFrame*)page, 0);
        return Assert.Throws<BadPageException>(() => sys.Pages.FreePages((PageFrame*)page, 0));
    }
}
