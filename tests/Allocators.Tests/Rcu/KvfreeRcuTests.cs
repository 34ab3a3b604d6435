using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Rcu;

/// <summary>
/// The kernel's lib/test_vmalloc.c kvfree_rcu cases: each worker vmallocs one page, writes its first byte and frees it
/// with kvfree_rcu, test_loop_count times. The kernel runs test_loop_count = 1000000 on nr_threads = one per online
/// CPU; here 2000 loops on two threads. After rcu_barrier every page but new page tables must be back.
/// </summary>
public unsafe class KvfreeRcuTests
{
    private const int LoopCount = 2000; // test_vmalloc.c: test_loop_count = 1000000
    private const int Threads = 2;      // test_vmalloc.c: nr_threads = num_online_cpus()
    private const int PageSize = 4096;
    private const int ArrayOffset = 16; // struct test_kvfree_rcu { struct rcu_head rcu; unsigned char array[20]; }

    private static long SettledFreePages(MemorySystem sys)
    {
        sys.Rcu.RcuBarrier();
        sys.Vmalloc.PurgeVmapAreas();
        sys.Slab.ShrinkAll();
        sys.Pages.DrainAllPages();
        // Page tables the vmalloc range grew stay, as in the kernel: every other page must come back.
        return sys.Pages.NrFreePages + sys.Pages.NrPageTablePages;
    }

    /// <summary>
    /// The body both cases share: <see cref="Threads"/> workers each vmalloc one page, write its array[0] and hand it
    /// to <paramref name="free"/>, <see cref="LoopCount"/> times; then every page but new page tables must be back.
    /// </summary>
    private static void RunCase(Action<MemorySystem, ulong> free)
    {
        using var sys = NewSystem(mebibytes: 64);
        // Page tables of the vmalloc range stay once made (as in the kernel): make the first before the baseline.
        sys.Vmalloc.Vfree(sys.Vmalloc.Vmalloc(PageSize));
        long start = SettledFreePages(sys);
        long failed = 0;
        var threads = Enumerable.Range(0, Threads).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < LoopCount; i++)
            {
                ulong p = sys.Vmalloc.Vmalloc(1 * PageSize);
                if (p == 0) { Interlocked.Increment(ref failed); return; }
                sys.Kernel.Write(p + ArrayOffset, (byte)'a');
                free(sys, p);
            }
        })).ToList();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Equal(0, failed);
        Assert.Equal(start, SettledFreePages(sys));
    }

    /// <summary>kvfree_rcu_1_arg_vmalloc_test: kvfree_rcu(p) (now kvfree_rcu_mightsleep).</summary>
    [Fact]
    public void KvfreeRcu1ArgVmallocTest() => RunCase((sys, p) => sys.Vmalloc.KvfreeRcu(p));

    /// <summary>
    /// kvfree_rcu_2_arg_vmalloc_test: kvfree_rcu(p, rcu), the free threaded through a callback head. Here the
    /// callback is call_rcu's: a vfree run after the grace period.
    /// </summary>
    [Fact]
    public void KvfreeRcu2ArgVmallocTest() => RunCase((sys, p) => sys.Rcu.CallRcu(() => sys.Vmalloc.Vfree(p)));

    /// <summary>kvfree_rcu of kvmalloc memory of both kinds (kmalloc-backed and vmalloc-backed) gives every page back.</summary>
    [Fact]
    public void KvfreeRcuOfKvmallocMemoryOfBothKinds()
    {
        using var sys = NewSystem(mebibytes: 64);
        sys.Vmalloc.Vfree(sys.Vmalloc.Vmalloc(PageSize));
        long start = SettledFreePages(sys);
        for (int i = 0; i < 500; i++)
        {
            sys.Vmalloc.KvfreeRcu(sys.Vmalloc.Kvmalloc(100));
            sys.Vmalloc.KvfreeRcu(sys.Vmalloc.Kvmalloc(64 * 1024));
        }
        Assert.Equal(start, SettledFreePages(sys));
    }
}
