namespace Allocators.PageAlloc;

/// <summary>What a <see cref="PageAllocatorWarning"/> is about.</summary>
public enum PageAllocatorWarningKind
{
    /// <summary>A request without <see cref="Gfp.NoWarn"/> failed ("page allocation failure").</summary>
    AllocationFailure,

    /// <summary>A <see cref="Gfp.NoFail"/> request is still waiting for memory ("page allocation stalls for").</summary>
    AllocationStall,

    /// <summary>A risky request that still goes ahead (the kernel's WARN_ON_ONCE), e.g. NoFail above order 1.</summary>
    Misuse,

    /// <summary>
    /// A background thread of the memory system (kswapd) hit a bug and stopped (the kernel's oops in a kthread); the
    /// text carries the exception. Allocations go on, reclaiming directly.
    /// </summary>
    Oops,
}

/// <summary>
/// One warning of a page allocator: the line given to <see cref="PageAllocatorOptions.Warn"/>, with what it is about.
/// </summary>
/// <param name="Kind">What the warning is about.</param>
/// <param name="Gfp">The flags of the request.</param>
/// <param name="Order">The order of the request.</param>
/// <param name="Text">The warning line, in the kernel's words.</param>
public sealed record PageAllocatorWarning(PageAllocatorWarningKind Kind, Gfp Gfp, int Order, string Text)
{
    /// <inheritdoc/>
    public override string ToString() => Text;
}
