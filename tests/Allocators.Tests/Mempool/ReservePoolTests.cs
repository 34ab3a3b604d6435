using Allocators.Mempool;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using CsCheck;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Mempool;

/// <summary>
/// The mempool: the reserve serves when the allocator fails (failslab / fail_page_alloc), frees refill the reserve
/// first, a caller that may block waits for a free, and every element goes back at the end.
/// </summary>
public unsafe class ReservePoolTests
{
    [Fact]
    public void ReserveServesWhenTheAllocatorFails()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        using (var pool = ReservePool.CreateKmallocPool(sys.Slab, minNr: 4, size: 128))
        {
            Assert.Equal(4, pool.Count);
            sys.Slab.Failslab.Probability = 100;
            var taken = new HashSet<nint>();
            for (int i = 0; i < 4; i++)
            {
                void* e = pool.Alloc(Gfp.Kernel);
                Assert.True(e != null, $"element {i} from the reserve");
                Assert.True(taken.Add((nint)e));
                *(long*)e = i; // usable memory
            }
            Assert.Equal(0, pool.Count);
            Assert.True(pool.Alloc(Gfp.Atomic) == null, "a caller that may not block gets null once the reserve is empty");
            Assert.True(sys.Slab.Failslab.Injected >= 5);
            sys.Slab.Failslab.Probability = 0;
            foreach (nint e in taken) pool.Free((void*)e);
            Assert.Equal(4, pool.Count);
        }
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void FreeRefillsTheReserveBeforeTheAllocator()
    {
        using var sys = NewUncheckedSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("pool-objects", 200);
        using (var pool = ReservePool.CreateSlabPool(cache, minNr: 2))
        {
            sys.Slab.Failslab.Probability = 100;
            void* a = pool.Alloc();
            void* b = pool.Alloc();
            sys.Slab.Failslab.Probability = 0;
            void* c = pool.Alloc(); // from the cache now
            Assert.True(c != null);
            Assert.Equal(0, pool.Count);
            pool.Free(c);
            Assert.Equal(1, pool.Count); // kept in the reserve, not freed
            sys.Slab.Failslab.Probability = 100;
            Assert.True(pool.Alloc(Gfp.NoWait) == c, "the freed element was not the one the reserve kept");
            sys.Slab.Failslab.Probability = 0;
            pool.Free(c);
            pool.Free(a);
            Assert.Equal(2, pool.Count);
            pool.Free(b); // the reserve is full: this one goes back to the cache
            Assert.Equal(2, pool.Count);
        }
        Assert.Equal(0, cache.ActiveObjects);
        AssertEmptiedBackToBaseline(sys, cache, baseline);
    }

    [Fact]
    public void AWaiterBlocksUntilAFree()
    {
        using var sys = NewSystem();
        using var pool = ReservePool.CreateKmallocPool(sys.Slab, minNr: 1, size: 64);
        sys.Slab.Failslab.Probability = 100;
        void* only = pool.Alloc();
        Assert.True(only != null);
        int freed = 0;
        nint got = 0;
        int freedWhenGot = -1;
        var waiter = new Thread(() =>
        {
            got = (nint)pool.Alloc(Gfp.Kernel);
            freedWhenGot = Volatile.Read(ref freed);
        });
        waiter.Start();
        Thread.Sleep(50); // let it reach the wait; the assertions below do not depend on it
        Volatile.Write(ref freed, 1);
        pool.Free(only);
        Assert.True(waiter.Join(TimeSpan.FromSeconds(20)), "the waiter was never woken");
        Assert.Equal(1, freedWhenGot);
        Assert.Equal((nint)only, got);
        sys.Slab.Failslab.Probability = 0;
        pool.Free((void*)got);
        Assert.Equal(1, pool.Count);
    }

    [Fact]
    public void PagePoolFallsBackOnFailPageAllocAndGivesEveryPageBack()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        using (var pool = ReservePool.CreatePagePool(sys.Pages, minNr: 3, order: 1))
        {
            sys.Pages.FaultInjection.Probability = 100;
            var pages = new List<nint>();
            for (int i = 0; i < 3; i++)
            {
                var page = (PageFrame*)pool.Alloc(Gfp.NoIo);
                Assert.True(page != null);
                pages.Add((nint)page);
            }
            Assert.True(pool.Alloc(Gfp.NoWait) == null);
            sys.Pages.FaultInjection.Probability = 0;
            var extra = (PageFrame*)pool.Alloc(Gfp.NoIo);
            Assert.True(extra != null);
            pages.Add((nint)extra);
            foreach (nint p in pages) pool.Free((void*)p);
            Assert.Equal(3, pool.Count);
        }
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void ResizeGrowsAndShrinksTheReserve()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        using (var pool = ReservePool.CreateKmallocPool(sys.Slab, minNr: 2, size: 256))
        {
            Assert.True(pool.Resize(10));
            Assert.Equal(10, pool.Count);
            Assert.Equal(10, pool.MinCount);
            Assert.True(pool.Resize(3));
            Assert.Equal(3, pool.Count);
            Assert.Equal(3, pool.MinCount);
            sys.Slab.Failslab.Probability = 100;
            Assert.False(pool.Resize(6)); // nothing can be allocated: the minimum stands, frees fill it
            Assert.Equal(6, pool.MinCount);
            sys.Slab.Failslab.Probability = 0;
        }
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void CustomPoolCallsItsFunctions()
    {
        using var sys = NewSystem();
        int allocs = 0, frees = 0;
        SlabAllocator slab = sys.Slab;
        var pool = ReservePool.Create(2, gfp => { allocs++; return slab.Kmalloc(32, gfp); }, e => { frees++; slab.Kfree(e); });
        Assert.Equal(2, allocs);
        void* e = pool.Alloc();
        pool.Free(e);
        pool.Dispose();
        Assert.Equal(allocs, frees);
    }

    [Fact]
    public void AllocAndFreeOfTheBuiltInFlavoursAllocateNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        using var pool = ReservePool.CreateKmallocPool(sys.Slab, minNr: 4, size: 64);
        void Body()
        {
            for (int i = 0; i < 50_000; i++) pool.Free(pool.Alloc());
        }
        Body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Body();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    /// <summary>
    /// Model: a pool of min 3 against a counter of live elements, with failslab flipped at random; the reserve never
    /// exceeds the minimum, an allocation fails only with the allocator failing and the reserve empty, and everything
    /// balances at the end.
    /// </summary>
    [Fact]
    public void MatchesTheModel()
    {
        Gen.Int[0, 2].Array[1, 60].Sample(ops =>
        {
            using var sys = NewSystem();
            string baseline = Baseline(sys);
            using (var pool = ReservePool.CreateKmallocPool(sys.Slab, minNr: 3, size: 96))
            {
                var live = new Stack<nint>();
                bool failing = false;
                foreach (int op in ops)
                {
                    if (op == 0)
                    {
                        int reserveBefore = pool.Count;
                        void* e = pool.Alloc(Gfp.NoWait);
                        if (e == null) Assert.True(failing && reserveBefore == 0);
                        else
                        {
                            live.Push((nint)e);
                            Assert.Equal(failing ? reserveBefore - 1 : reserveBefore, pool.Count);
                        }
                    }
                    else if (op == 1 && live.Count > 0)
                    {
                        int reserveBefore = pool.Count;
                        pool.Free((void*)live.Pop());
                        Assert.Equal(Math.Min(3, reserveBefore + 1), pool.Count);
                    }
                    else
                    {
                        failing = !failing;
                        sys.Slab.Failslab.Probability = failing ? 100 : 0;
                    }
                    Assert.InRange(pool.Count, 0, 3);
                }
                sys.Slab.Failslab.Probability = 0;
                while (live.Count > 0) pool.Free((void*)live.Pop());
                Assert.Equal(3, pool.Count);
            }
            AssertBackToBaseline(sys, baseline);
        }, iter: 40);
    }
}
