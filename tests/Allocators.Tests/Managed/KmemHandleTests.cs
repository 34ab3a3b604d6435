using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Managed;
using Allocators.Slab;
using static Allocators.Tests.Managed.ManagedTestSupport;

namespace Allocators.Tests.Managed;

/// <summary>
/// <see cref="KmemHandle{T}"/>: a <c>ref T</c> to a typed cache object with no pointer in sight. Values written come
/// back, a second free gets the cache's own double-free check (address named, books unchanged), a default handle is
/// refused, and a loop of handle alloc/free allocates no managed bytes.
/// </summary>
public class KmemHandleTests
{
    public struct Order
    {
        public long Id;
        public double Price;
        public int Quantity;
    }

    [Fact]
    public void ValuesWrittenThroughHandlesComeBack()
    {
        using var sys = NewSystem();
        KmemCache<Order> orders = sys.Slab.CreateCache<Order>("managed-orders");
        var handles = new List<KmemHandle<Order>>();
        for (int i = 0; i < 1000; i++)
        {
            KmemHandle<Order> h = orders.AllocHandle();
            ref Order o = ref h.Value;
            o.Id = i;
            o.Price = i * 1.5;
            o.Quantity = -i;
            handles.Add(h);
        }
        Assert.Equal(1000, Live(sys.Slab, orders.Cache));
        Assert.Equal(1000, handles.Distinct().Count());
        for (int i = 0; i < handles.Count; i++)
        {
            Order o = handles[i].Value;
            Assert.Equal((i, i * 1.5, -i), (o.Id, o.Price, o.Quantity));
            Assert.Same(orders, handles[i].Cache);
        }
        foreach (KmemHandle<Order> h in handles) h.Free();
        Assert.Equal(0, Live(sys.Slab, orders.Cache));
    }

    [Fact]
    public void ASecondFreeGetsTheCachesCheckAndChangesNothing()
    {
        using var sys = NewSystem();
        KmemCache<Order> orders = sys.Slab.CreateCache<Order>("managed-df");
        KmemHandle<Order> a = orders.AllocHandle();
        KmemHandle<Order> b = orders.AllocHandle();
        KmemHandle<Order> copy = a;
        a.Free();
        b.Free();
        string before = Books(sys.Slab);
        var ex = Assert.ThrowsAny<MemoryCorruptionException>(copy.Free);
        Assert.Contains($"{a.Address:x}", ex.Message);
        Assert.Equal(before, Books(sys.Slab));
        Assert.Equal(0, Live(sys.Slab, orders.Cache));
    }

    [Fact]
    public void ADefaultHandleIsRefused()
    {
        KmemHandle<Order> none = default;
        Assert.True(none.IsDefault);
        Assert.Null(none.Cache);
        Assert.Throws<InvalidOperationException>(() => none.Value.Id);
        Assert.Throws<InvalidOperationException>(none.Free);
        Assert.Throws<ArgumentNullException>(() => KmemCacheExtensions.AllocHandle<Order>(null!));
    }

    [Fact]
    public void DisposeFreesAndIsQuietOnceTheSystemIsGone()
    {
        var sys = NewSystem();
        KmemCache<Order> orders = sys.Slab.CreateCache<Order>("managed-dispose");
        using (KmemHandle<Order> h = orders.AllocHandle()) h.Value.Id = 7;
        Assert.Equal(0, Live(sys.Slab, orders.Cache));
        KmemHandle<Order> left = orders.AllocHandle();
        sys.Dispose();
        left.Dispose();
    }

    [Fact]
    public void HandleLoopAllocatesNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        KmemCache<Order> orders = sys.Slab.CreateCache<Order>("managed-zero-h");
        void Body()
        {
            for (int i = 0; i < 100_000; i++)
            {
                KmemHandle<Order> h = orders.AllocHandle();
                h.Value.Id = i;
                h.Free();
            }
        }
        Body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Body();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
