using System.Diagnostics.Tracing;
using Allocators.Common;

namespace Allocators.PageAlloc;

/// <summary>
/// warn_alloc and its receivers: the <see cref="PageAllocatorOptions.Warn"/> channel, the <see cref="Warned"/> event
/// and the <c>Allocators</c> event source. A warning is counted always but formatted only when one of them listens:
/// under memory pressure failures come in bursts, and nobody should pay for lines nobody reads.
/// </summary>
public sealed unsafe partial class PageAllocator
{
    private long _warnings;

    /// <summary>Why an allocation failed, for the bracketed note after the kernel's line.</summary>
    private enum FailureCause { NoMemory, OrderAboveMax, Injected }

    /// <summary>
    /// Raised on the warning thread for every warning the allocator gives (what <see cref="PageAllocatorOptions.Warn"/>
    /// receives), with what it is about: failures without <see cref="Gfp.NoWarn"/>, stall reports, misuse, a kswapd
    /// oops. Handlers must not block on memory of this allocator.
    /// </summary>
    public event Action<PageAllocatorWarning>? Warned;

    private bool WarningsWanted
        => _options.Warn != null || Warned != null || AllocatorsEventSource.Log.IsEnabled(EventLevel.Warning, AllocatorsEventSource.Keywords.Pages);

    private void ReportFailure(Gfp gfp, int order, FailureCause cause)
    {
        Interlocked.Increment(ref _allocFailures);
        if ((gfp & Gfp.NoWarn) != 0) return;
        Interlocked.Increment(ref _warnings);
        if (!WarningsWanted) return;
        string? why = cause switch
        {
            FailureCause.OrderAboveMax => $"order {order} exceeds MAX_PAGE_ORDER {MaxOrder}",
            FailureCause.Injected => "fail_page_alloc injected failure",
            _ => null,
        };
        string text = WarnAllocText(gfp, $"page allocation failure: order:{order}", why);
        Deliver(new PageAllocatorWarning(PageAllocatorWarningKind.AllocationFailure, gfp, order, text), default);
    }

    /// <summary>
    /// An oops of one of the memory system's background threads (<paramref name="text"/> names it and the exception),
    /// to every warning receiver. A receiver that throws is ignored: the reporting thread is ending anyway.
    /// </summary>
    internal void ReportOops(string text)
    {
        Interlocked.Increment(ref _warnings);
        try
        {
            if (WarningsWanted) Deliver(new PageAllocatorWarning(PageAllocatorWarningKind.Oops, 0, 0, text), default);
        }
        catch (Exception)
        {
            // Nobody to tell: this runs on the failing thread's way out.
        }
    }

    /// <summary>
    /// warn_alloc's line in the kernel's format (<c>comm: what, mode:%#x(%pGg), nodemask=...</c>), with
    /// <paramref name="why"/> appended in brackets where the kernel would leave the reader to guess.
    /// </summary>
    private static string WarnAllocText(Gfp gfp, string what, string? why = null)
        => $"allocators: {what}, mode:0x{(uint)gfp:x}({gfp.Describe()}), nodemask=(null)" + (why is null ? "" : $" [{why}]");

    /// <summary>Hands a counted warning to every receiver; <paramref name="stalledFor"/> is a stall's wait so far.</summary>
    private void Deliver(PageAllocatorWarning warning, TimeSpan stalledFor)
    {
        _options.Warn?.Invoke(warning.Text);
        Warned?.Invoke(warning);
        Trace(warning, stalledFor);
    }

    /// <summary>Writes <paramref name="warning"/> to the <c>Allocators</c> event source, if anyone listens.</summary>
    private void Trace(PageAllocatorWarning warning, TimeSpan stalledFor)
    {
        var log = AllocatorsEventSource.Log;
        if (!log.IsEnabled(EventLevel.Warning, AllocatorsEventSource.Keywords.Pages)) return;
        switch (warning.Kind)
        {
            case PageAllocatorWarningKind.AllocationFailure:
                log.AllocationFailure(Id, warning.Order, (uint)warning.Gfp, warning.Gfp.Describe(), warning.Text);
                break;
            case PageAllocatorWarningKind.AllocationStall:
                log.AllocationStall(Id, warning.Order, (uint)warning.Gfp, warning.Gfp.Describe(), (long)stalledFor.TotalMilliseconds, warning.Text);
                break;
            default:
                log.PageAllocatorWarning(Id, warning.Order, (uint)warning.Gfp, warning.Text);
                break;
        }
    }
}
