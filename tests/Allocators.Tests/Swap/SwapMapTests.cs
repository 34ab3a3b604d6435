using Allocators.Common;
using Allocators.Swap;

namespace Allocators.Tests.Swap;

/// <summary>swap_map counting (swap_duplicate, swap_free, swapcache_prepare, put_swap_folio) and the cluster allocator.</summary>
public sealed unsafe class SwapMapTests : SwapTestBase
{
    [Fact]
    public void AllocatingEverySlotThenFreeingAllRestoresTheStartState()
    {
        // 3 full clusters and a partial one (the header takes slot 0, the tail of the last cluster is past the end).
        SwapDevice device = Swapon("swap", 3 * 256 + 100);
        var start = Snapshot(device);
        var entries = new List<SwapEntry>();
        for (SwapEntry e = device.GetSwapPage(); !e.IsNone; e = device.GetSwapPage()) entries.Add(e);

        Assert.Equal(device.Pages, entries.Count);
        Assert.Equal(device.Pages, device.UsedPages);
        Assert.Equal(entries.Count, entries.Distinct().Count());
        Assert.All(entries, e => Assert.InRange(e.Offset, 1ul, (ulong)device.Pages));
        Assert.Equal(0, device.FreeClusters);
        Assert.Equal(0, device.NonfullClusters);
        device.CheckConsistency();

        foreach (SwapEntry e in entries) device.PutSwapCache(e);
        Assert.Equal(0, device.UsedPages);
        device.CheckConsistency();
        var end = Snapshot(device);
        Assert.Equal(start.Map, end.Map);
        Assert.Equal(start.Free, end.Free);          // every cluster without a header or tail slot is free again
        Assert.Equal(start.Nonfull, end.Nonfull);
        Assert.Equal(2, device.Clusters - device.FreeClusters);
    }

    [Fact]
    public void CountsAndTheCacheBitFollowTheKernel()
    {
        SwapDevice device = Swapon("swap", 64);
        SwapEntry e = device.GetSwapPage();
        Assert.Equal(SwapDevice.SwapHasCache, device.MapEntry((uint)e.Offset));
        Assert.Equal(0, device.SwapCount(e));
        Assert.True(device.HasCache(e));

        device.Duplicate(e);                   // try_to_unmap: the first PTE takes the entry
        device.Duplicate(e);                   // fork: a second one
        Assert.Equal(2, device.SwapCount(e));
        Assert.False(device.SwapcachePrepare(e));   // already in the swap cache
        device.PutSwapCache(e);                // reclaim dropped the page from the swap cache
        Assert.False(device.HasCache(e));
        Assert.Equal(1, device.UsedPages);

        Assert.True(device.SwapcachePrepare(e));    // a fault reads it back
        Assert.False(device.SwapcachePrepare(e));   // a racing fault waits for that read
        Assert.Equal(1, device.SwapFree(e));
        Assert.Equal(0, device.SwapFree(e));
        Assert.Equal(1, device.UsedPages);     // the swap cache still holds the slot
        device.PutSwapCache(e);
        Assert.Equal(0, device.UsedPages);
        Assert.Equal(0, device.MapEntry((uint)e.Offset));
        device.CheckConsistency();
    }

    [Fact]
    public void MisuseThrowsInTheKernelsWordsAndChangesNothing()
    {
        SwapDevice device = Swapon("swap", 64);
        SwapEntry used = device.GetSwapPage();
        device.Duplicate(used);
        var free = new SwapEntry(device.Type, used.Offset + 1);
        var before = Snapshot(device);

        Assert.StartsWith("swap_dup: Bad swap offset entry", Assert.Throws<MemoryCorruptionException>(() => device.Duplicate(free)).Message);
        Assert.StartsWith("swap_free: Unused swap offset entry", Assert.Throws<MemoryCorruptionException>(() => device.SwapFree(free)).Message);
        Assert.Throws<MemoryCorruptionException>(() => device.PutSwapCache(free));
        Assert.False(device.SwapcachePrepare(free)); // -ENOENT, and the slot stays free
        Assert.Equal(0, device.MapEntry((uint)free.Offset));
        Assert.StartsWith("swap_dup: Bad swap offset entry", Assert.Throws<MemoryCorruptionException>(() => device.Duplicate(new SwapEntry(device.Type, 64))).Message);
        Assert.Throws<MemoryCorruptionException>(() => device.SwapFree(new SwapEntry(device.Type + 1, 1)));
        Assert.Throws<MemoryCorruptionException>(() => device.WritePage(free, null));
        Assert.Equal(before.Map, Snapshot(device).Map);

        device.PutSwapCache(used);
        Assert.Throws<MemoryCorruptionException>(() => device.PutSwapCache(used));  // the cache bit is gone
        Assert.Equal(0, device.SwapFree(used));
        Assert.Throws<MemoryCorruptionException>(() => device.SwapFree(used));      // double free
        Assert.Equal(0, device.UsedPages);
        device.CheckConsistency();
    }

    [Fact]
    public void CountOverflowIsRefusedWithoutChange()
    {
        SwapDevice device = Swapon("swap", 16);
        SwapEntry e = device.GetSwapPage();
        for (int i = 0; i < SwapDevice.SwapMapMax; i++) device.Duplicate(e);
        Assert.Equal(SwapDevice.SwapMapMax, device.SwapCount(e));
        var ex = Assert.Throws<InvalidOperationException>(() => device.Duplicate(e));
        Assert.IsNotType<MemoryCorruptionException>(ex);
        Assert.Equal(SwapDevice.SwapMapMax | SwapDevice.SwapHasCache, device.MapEntry((uint)e.Offset));
    }

    [Fact]
    public void NoSlotsWhenNotWritable()
    {
        SwapDevice device = Swapon("swap", 16);
        device.WriteOk = false;
        Assert.True(device.GetSwapPage().IsNone);
        device.WriteOk = true;
        Assert.False(device.GetSwapPage().IsNone);
    }
}
