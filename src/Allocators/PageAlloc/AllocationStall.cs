namespace Allocators.PageAlloc;

/// <summary>
/// An allocation that has been waiting for memory longer than <see cref="PageAllocatorOptions.StallWarningInterval"/>
/// (the kernel's "page allocation stalls" report); raised again after each further interval while it waits.
/// </summary>
/// <param name="Gfp">The flags of the waiting request.</param>
/// <param name="Order">The order of the waiting request.</param>
/// <param name="Elapsed">How long the request has been in the allocator so far.</param>
/// <param name="Text">The warning line, as given to <see cref="PageAllocatorOptions.Warn"/>.</param>
public sealed record AllocationStall(Gfp Gfp, int Order, TimeSpan Elapsed, string Text)
{
    /// <inheritdoc/>
    public override string ToString() => Text;
}
