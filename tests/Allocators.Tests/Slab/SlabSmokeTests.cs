using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Xunit.Abstractions;

namespace Allocators.Tests.Slab;

public unsafe class SlabSmokeTests(ITestOutputHelper output)
{
    // 128 MiB: the round trip's ~18 MiB of kmalloc slabs also fit in the low half of a split arena with KASAN's red zones.
    private static MemorySystem NewSystem(SlabFlags kmallocFlags = SlabFlags.None) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = 128L << 20 },
        Slab = new SlabAllocatorOptions { KmallocFlags = kmallocFlags },
    });

    [Fact]
    public void KmallocRoundTripRestoresBuddyInfo()
    {
        using var sys = NewSystem();
        sys.Pages.DrainAllPages();
        string initial = sys.Pages.BuddyInfo();
        var ptrs = new List<nint>();
        var rnd = new Random(1);
        for (int i = 0; i < 3000; i++)
        {
            nuint size = (nuint)rnd.Next(1, 9000);
            byte* p = (byte*)sys.Slab.Kmalloc(size);
            Assert.True(p != null);
            p[0] = 1; p[size - 1] = 2;
            if (size is 64 or 128 or 256) Assert.Equal(0u, (uint)((nuint)p % size));
            ptrs.Add((nint)p);
        }
        foreach (var p in ptrs) sys.Slab.Kfree((void*)p);
        output.WriteLine(sys.Slab.SlabInfo());
        sys.Slab.ShrinkAll();
        sys.Pages.DrainAllPages();
        Assert.Equal(initial, sys.Pages.BuddyInfo());
    }

    [Fact]
    public void RedZoneOverwriteIsReported()
    {
        using var sys = NewSystem(SlabFlags.Debug);
        byte* p = (byte*)sys.Slab.Kmalloc(50);
        p[50] = 0x78; // kmalloc slack
        sys.Slab.Kfree(p);
        var cache = sys.Slab.KmallocCache(64)!;
        output.WriteLine(string.Join("\n", cache.Reports.Select(r => r.Text)));
        Assert.Contains(cache.Reports, r => r.Title == "BUG kmalloc-64: kmalloc Redzone overwritten");
        Assert.Empty(cache.Validate());
    }

    [Fact]
    public void CrossThreadFrees()
    {
        using var sys = NewSystem();
        sys.Pages.DrainAllPages();
        string initial = sys.Pages.BuddyInfo();
        var cache = sys.Slab.CreateCache("test-48", 48);
        var q = new Allocators.Tests.Threading.HandOffQueue<nint>(10000);
        var producer = new Thread(() => { for (int i = 0; i < 200000; i++) { var o = (long*)cache.Alloc(); *o = i; q.Add((nint)o); } q.CompleteAdding(); });
        var consumer = new Thread(() => { long n = 0; foreach (var o in q.GetConsumingEnumerable()) { Assert.Equal(n++, *(long*)o); cache.Free((void*)o); } });
        producer.Start(); consumer.Start(); producer.Join(); consumer.Join();
        output.WriteLine(cache.Stats.ToString());
        Assert.Equal(0, cache.ActiveObjects - 0 - cache.Stats.ActiveObjects);
        cache.Destroy();
        sys.Slab.ShrinkAll();
        sys.Pages.DrainAllPages();
        Assert.Equal(initial, sys.Pages.BuddyInfo());
    }
}
