using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Tests.Slab;

/// <summary>
/// Call-site capture through the stack depot (Linux x86-64): the frame-pointer walk, the depot's lookups, and that a
/// captured site is the one the managed stack trace names: distinct call sites distinct, repeated ones equal, no
/// managed allocation once a stack is known. Elsewhere the depot does not run and these tests check nothing.
/// </summary>
public sealed unsafe class StackDepotTests
{
    private const int Rounds = 300;

    [Fact]
    public void TheWalkFollowsTheFramePointerChain()
    {
        if (!FrameUnwinder.Available) return;
        var frames = new nuint[FrameUnwinder.MaxFrames];
        int count;
        fixed (nuint* p = frames) count = Recurse(FrameUnwinder.MaxFrames + 8, p, out _);

        // Every level of an unoptimised recursion has a frame and returns to the same instruction. The innermost one
        // or two differ: the return from Walk, and in a Debug build of the library the frame of its call to the stub.
        Assert.Equal(FrameUnwinder.MaxFrames, count);
        Assert.NotEqual(frames[0], frames[^1]);
        Assert.All(frames[2..], f => Assert.Equal(frames[^1], f));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.NoOptimization)]
    private static int Recurse(int depth, nuint* frames, out bool outermost)
    {
        if (depth == 0) return FrameUnwinder.Walk(frames, out outermost);
        int count = Recurse(depth - 1, frames, out outermost);
        return count;
    }

    [Fact]
    public void AWalkOnAFreshThreadEndsAtItsOutermostFrameOrIsRefused()
    {
        if (!FrameUnwinder.Available) return;
        int count = 0, traceFrames = 0;
        var thread = new Thread(() =>
        {
            nuint* frames = stackalloc nuint[FrameUnwinder.MaxFrames];
            count = FrameUnwinder.Walk(frames, out _);
            traceFrames = new StackTrace().FrameCount;
        });
        thread.Start();
        thread.Join();
        // A shallow stack either reaches the zero frame pointer of the thread's first frame, past every managed frame,
        // or stops on a native frame that keeps no frame pointer and is refused; it never ends early in managed code.
        Assert.True(count == -1 || count >= traceFrames, $"walk {count}, trace {traceFrames}");
    }

    [Fact]
    public void OnlyAddressesInTheRuntimesOwnCodeCountAsHidingAFrame()
    {
        if (!FrameUnwinder.Available) return;
        nuint* frames = stackalloc nuint[FrameUnwinder.MaxFrames];
        int count = Recurse(2, frames, out _);
        // Three managed frames (beyond them the test runner's reflection call goes through the runtime's code), then a
        // return address inside libcoreclr.so, where the GC's hijack stub lives.
        Assert.False(FrameUnwinder.HidesAFrame(frames, 3));
        nuint runtime = (nuint)NativeLibrary.GetExport(NativeLibrary.Load("libcoreclr.so", typeof(object).Assembly, null), "coreclr_initialize");
        frames[1] = runtime + 16;
        Assert.True(FrameUnwinder.HidesAFrame(frames, 3));
        Assert.True(count > 3);
    }

    [Fact]
    public void HashCollisionsAreTellApartByTheFrames()
    {
        var depot = new StackDepot();
        nuint* a = stackalloc nuint[] { 1, 2, 3 };
        nuint* b = stackalloc nuint[] { 1, 2, 4 };
        depot.Save(7, a, 3, 10);
        depot.Save(7, b, 3, 11);
        depot.Save(7, a, 2, 12);
        Assert.Equal(10, depot.Find(7, a, 3));
        Assert.Equal(11, depot.Find(7, b, 3));
        Assert.Equal(12, depot.Find(7, a, 2));
        Assert.Equal(0, depot.Find(8, a, 3));
        Assert.Equal(3, depot.Count);
    }

    [Fact]
    public void TheDepotGrowsAndKeepsEveryStack()
    {
        var depot = new StackDepot();
        nuint* f = stackalloc nuint[2];
        for (int i = 1; i <= 5000; i++)
        {
            f[0] = (nuint)i;
            f[1] = (nuint)(i * 3);
            depot.Save(StackDepot.Hash(f, 2), f, 2, i);
        }
        for (int i = 1; i <= 5000; i++)
        {
            f[0] = (nuint)i;
            f[1] = (nuint)(i * 3);
            Assert.Equal(i, depot.Find(StackDepot.Hash(f, 2), f, 2));
        }
    }

    [Fact]
    public void TwoCallSitesInOneMethodKeepTheirOwnIdsAndTheTraceNames()
    {
        var table = new CallSiteTable();
        var slow = CallSiteTable.WithoutDepot();
        (int a, int b) = TwoSites(table);
        (int sa, int sb) = TwoSites(slow);
        Assert.NotEqual(a, b);
        Assert.Equal(slow.Name(sa), table.Name(a));
        Assert.Equal(slow.Name(sb), table.Name(b));
        Assert.StartsWith($"{nameof(StackDepotTests)}.{nameof(TwoSites)}+0x", table.Name(a));

        // The same two statements again and again: the depot answers (the JIT may recompile the callers meanwhile).
        for (int i = 0; i < Rounds; i++) Assert.Equal((a, b), TwoSites(table));
        Assert.Equal(2, table.Count);
        if (FrameUnwinder.Available) Assert.True(table.DepotCount > 0);
    }

    // Two captures at the same depth through the same library frames: only the return address into this method differs.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (int, int) TwoSites(CallSiteTable table)
    {
        int a = table.Capture();
        int b = table.Capture();
        return (a, b);
    }

    [Fact]
    public void DebugCacheAllocationsFromTwoMethodsNameEachMethod()
    {
        using var system = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 32 << 20 } });
        KmemCache cache = system.Slab.CreateCache("depot-store-user", 48, flags: SlabFlags.StoreUser);
        for (int i = 0; i < Rounds; i++)
        {
            void* a = AllocFromA(cache);
            void* b = AllocFromB(cache);
            Assert.StartsWith($"{nameof(StackDepotTests)}.{nameof(AllocFromA)}+0x", cache.AllocationSite(a));
            Assert.StartsWith($"{nameof(StackDepotTests)}.{nameof(AllocFromB)}+0x", cache.AllocationSite(b));
            cache.Free(a);
            cache.Free(b);
        }
        Assert.Equal(4, system.Slab.CallSites.Count); // two allocation sites and the two frees above
        cache.Destroy();
    }

    // Both reach the capture through the same library frames at the same depth; only the return address into each differs.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* AllocFromA(KmemCache cache) => cache.Alloc();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* AllocFromB(KmemCache cache) => cache.Alloc();

    [Fact]
    public void KasanKmallocSitesMatchTheTraceAndStayApart()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32 << 20, Checks = new CheckedModeOptions { Kasan = true } },
        });
        KmemCache kmalloc64 = system.Slab.KmallocCache(64)!;
        string? first = null, second = null;
        for (int i = 0; i < Rounds; i++)
        {
            (nint p, nint q) = KmallocTwice(system.Slab);
            string? sp = kmalloc64.AllocationSite((void*)p), sq = kmalloc64.AllocationSite((void*)q);
            first ??= sp;
            second ??= sq;
            Assert.Equal(first, sp);
            Assert.Equal(second, sq);
            system.Slab.Kfree((void*)p);
            system.Slab.Kfree((void*)q);
        }
        Assert.NotEqual(first, second);
        Assert.StartsWith($"{nameof(StackDepotTests)}.{nameof(KmallocTwice)}+0x", first);
        Assert.StartsWith($"{nameof(StackDepotTests)}.{nameof(KmallocTwice)}+0x", second);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (nint, nint) KmallocTwice(SlabAllocator slab)
    {
        void* p = slab.Kmalloc(64);
        void* q = slab.Kmalloc(64);
        return ((nint)p, (nint)q);
    }

    [Fact]
    public void AKnownStackIsCapturedWithoutManagedAllocation()
    {
        if (!FrameUnwinder.Available) return;
        var table = new CallSiteTable();
        for (int i = 0; i < Rounds; i++) TwoSites(table);
        long best = long.MaxValue;
        for (int window = 0; window < 5; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 1000; i++) TwoSites(table);
            best = Math.Min(best, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, best);
    }
}
