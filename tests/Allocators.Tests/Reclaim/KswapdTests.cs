using Allocators.PageAlloc;
using Allocators.Reclaim;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// kswapd's thread survives a bug in its work as the kernel's kthreads do: the exception is reported once as an
/// oops to the page allocator's warning receivers, the thread ends, later wake-ups do nothing, and the process goes on.
/// </summary>
public sealed class KswapdTests
{
    [Fact]
    public void ABalanceRunThatThrowsIsReportedOnceAndEndsOnlyTheThread()
    {
        int runs = 0;
        var oopses = new List<(int Node, Exception Error)>();
        using var oopsed = new ManualResetEventSlim();
        var kswapd = new Kswapd(
            (node, zone) =>
            {
                Interlocked.Increment(ref runs);
                throw new InvalidOperationException($"broken reclaim on node {node}, zone {zone}");
            },
            (node, e) =>
            {
                lock (oopses) oopses.Add((node, e));
                oopsed.Set();
            },
            node: 3);
        kswapd.Wake(ZoneType.Normal);
        Assert.True(oopsed.Wait(TimeSpan.FromSeconds(10)));
        SpinWait.SpinUntil(() => kswapd.Dead && !kswapd.Busy, TimeSpan.FromSeconds(10));
        Assert.True(kswapd.Dead);
        Assert.False(kswapd.Busy); // nothing waiting for the node to balance waits forever
        kswapd.Wake(ZoneType.Normal);
        Thread.Sleep(50);
        Assert.Equal(1, Volatile.Read(ref runs));
        var (n, error) = Assert.Single(oopses);
        Assert.Equal(3, n);
        Assert.Contains("broken reclaim on node 3, zone Normal", error.Message);
        kswapd.Dispose(); // returns: the thread has ended
    }

    [Fact]
    public void AnOopsReachesTheWarningReceiversAndAThrowingReceiverIsIgnored()
    {
        var lines = new List<string>();
        using var sys = NewSystem(warn: line => { lock (lines) lines.Add(line); throw new InvalidOperationException("receiver bug"); });
        var warnings = new List<PageAllocatorWarning>();
        sys.Pages.Warned += w => warnings.Add(w);
        sys.Pages.ReportOops("allocators: kswapd0: oops, the thread stops: System.Exception: boom");
        Assert.Contains(lines, l => l.Contains("kswapd0: oops") && l.Contains("boom"));
        Assert.Empty(warnings); // the throwing Warn receiver came first: the rest of the delivery was skipped, nothing escaped
        using var sys2 = NewSystem();
        sys2.Pages.Warned += w => warnings.Add(w);
        sys2.Pages.ReportOops("allocators: kswapd0: oops, the thread stops: System.Exception: boom");
        PageAllocatorWarning warning = Assert.Single(warnings);
        Assert.Equal(PageAllocatorWarningKind.Oops, warning.Kind);
        Assert.Contains("boom", warning.Text);
    }
}
