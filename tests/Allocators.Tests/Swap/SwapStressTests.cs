using System.Collections.Concurrent;
using System.Diagnostics;
using Allocators.Swap;

namespace Allocators.Tests.Swap;

/// <summary>Several threads allocating, sharing and freeing slots, each freeing slots another allocated.</summary>
public sealed class SwapStressTests : SwapTestBase
{
    [Fact]
    public void ConcurrentAllocAndCrossThreadFreeStayConsistent()
    {
        SwapDevice device = Swapon("swap", 4 * 256 + 17);
        const int threads = 3;
        var handoff = new ConcurrentQueue<SwapEntry>[threads];
        for (int i = 0; i < threads; i++) handoff[i] = new ConcurrentQueue<SwapEntry>();
        long allocated = 0, full = 0;
        var stop = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var random = new Random(t);
            var next = handoff[(t + 1) % threads];
            while (stop.ElapsedMilliseconds < 800)
            {
                if (random.Next(3) != 0)
                {
                    SwapEntry e = device.GetSwapPage();
                    if (e.IsNone) { Interlocked.Increment(ref full); continue; }
                    Interlocked.Increment(ref allocated);
                    device.Duplicate(e);          // a PTE holds it
                    next.Enqueue(e);              // another thread unmaps it
                }
                else if (handoff[t].TryDequeue(out SwapEntry e))
                {
                    // Drop the PTE and the swap cache in either order.
                    if (random.Next(2) == 0) { device.SwapFree(e); device.PutSwapCache(e); }
                    else { device.PutSwapCache(e); device.SwapFree(e); }
                }
            }
        })).ToArray();
        foreach (Thread worker in workers) worker.Start();
        foreach (Thread worker in workers) worker.Join();
        device.CheckConsistency();

        foreach (var queue in handoff)
            while (queue.TryDequeue(out SwapEntry e)) { device.SwapFree(e); device.PutSwapCache(e); }
        device.CheckConsistency();
        Assert.Equal(0, device.UsedPages);
        Assert.True(allocated > 1000, $"only {allocated} allocations");
    }
}
