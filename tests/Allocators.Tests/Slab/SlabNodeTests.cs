using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Node-aware allocation (kmalloc_node, kmem_cache_alloc_node) on a system with two emulated NUMA nodes: objects
/// come from the node asked for while it has memory, and from another node (as a preference, like the kernel) when
/// it has none, without growing slabs that the request can never use.
/// </summary>
public unsafe class SlabNodeTests
{
    private static MemorySystem NewTwoNodeSystem() => new(new MemorySystemOptions
    {
        // All low: a split (ALLOCATORS_HIGHMEM) would leave node 1 only HighMem, which slabs may not use.
        Physical = new PhysicalMemoryOptions { Size = 64L << 20, Nodes = 2, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow },
    });

    private static int NodeOf(MemorySystem sys, void* p)
    {
        PageFrame* page = sys.Pages.VirtToPage(p);
        return sys.Pages.Zones[page->ZoneId].Node;
    }

    private static long FreePagesOn(MemorySystem sys, int node)
        => sys.Pages.Zones.Where(z => z.Node == node).Sum(z => z.FreePages);

    [Theory]
    [InlineData(SlabFlags.None)]
    [InlineData(SlabFlags.Debug)]
    public void ObjectsComeFromTheRequestedNode(SlabFlags flags)
    {
        using var sys = NewTwoNodeSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("node-128", 128, 0, flags);
        var objects = new List<nint>();
        for (int node = 0; node < 2; node++)
        {
            for (int i = 0; i < 200; i++)
            {
                void* p = cache.AllocNode(Gfp.Kernel, node);
                Assert.True(p != null);
                Assert.Equal(node, NodeOf(sys, p));
                objects.Add((nint)p);
                void* k = sys.Slab.KmallocNode(300, Gfp.Kernel, node);
                Assert.True(k != null);
                Assert.Equal(node, NodeOf(sys, k));
                objects.Add((nint)k);
                void* large = sys.Slab.KmallocNode(20000, Gfp.Kernel, node);
                Assert.Equal(node, NodeOf(sys, large));
                objects.Add((nint)large);
            }
        }
        Assert.Equal(objects.Count, objects.Distinct().Count());
        foreach (nint p in objects)
        {
            if (cache.Owns((void*)p)) cache.Free((void*)p); else sys.Slab.Kfree((void*)p);
        }
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void AnExhaustedNodeFallsBackWithoutEatingTheOtherNode()
    {
        var sys = NewTwoNodeSystem();
        bool abandoned = false;
        try
        {
            string baseline = Baseline(sys);
            KmemCache cache = sys.Slab.CreateCache("fallback-256", 256);

            // Take every page node 1 will give.
            var taken = new List<(nint Page, int Order)>();
            for (int order = PageAllocator.MaxOrder; order >= 0; order--)
            {
                while (true)
                {
                    PageFrame* page = sys.Pages.AllocPagesNode(1, Gfp.Kernel | Gfp.ThisNode | Gfp.NoWarn, order);
                    if (page == null) break;
                    taken.Add(((nint)page, order));
                }
            }
            long node0Before = FreePagesOn(sys, 0);

            // On a worker with a deadline: a node-bound allocation that never finds its slab would loop forever.
            nint p = 0, k = 0;
            RunWithDeadline("kmem_cache_alloc_node on a node without memory", () =>
            {
                p = (nint)cache.AllocNode(Gfp.Kernel, 1);
                k = (nint)sys.Slab.KmallocNode(100, Gfp.Kernel, 1);
            }, () => abandoned = true);

            long node0After = FreePagesOn(sys, 0);
            Assert.True(p != 0, "node is a preference: another node serves the request");
            Assert.True(k != 0);
            Assert.Equal(0, NodeOf(sys, (void*)p));
            Assert.Equal(0, NodeOf(sys, (void*)k));
            Assert.True(node0Before - node0After <= 16, $"the fallback took {node0Before - node0After} pages of node 0 for two small objects");

            cache.Free((void*)p);
            sys.Slab.Kfree((void*)k);
            foreach (var (page, order) in taken) sys.Pages.FreePages((PageFrame*)page, order);
            cache.Destroy();
            AssertBackToBaseline(sys, baseline);
        }
        finally
        {
            if (!abandoned) sys.Dispose(); // a stuck worker would still be using it
        }
    }
}
