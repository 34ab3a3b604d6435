namespace Allocators.Common;

/// <summary>
/// Misuse or corruption of allocator memory was detected (double free, foreign or interior pointer, wrong order
/// or cache, overwritten metadata). The allocator's state is unchanged when this is thrown from an API call.
/// </summary>
public class MemoryCorruptionException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public MemoryCorruptionException(string message, nuint address = 0) : base(message) => Address = address;

    /// <summary>The address involved, when known.</summary>
    public nuint Address { get; }
}

/// <summary>A page was handed to the page allocator in a state that does not allow the operation (bad_page).</summary>
public sealed class BadPageException : MemoryCorruptionException
{
    /// <summary>Creates the exception.</summary>
    public BadPageException(string message, ulong pfn, string pageState, nuint address = 0)
        : base(message, address)
    {
        Pfn = pfn;
        PageState = pageState;
    }

    /// <summary>The page frame number.</summary>
    public ulong Pfn { get; }

    /// <summary>The page's flags, order and counts when the problem was found.</summary>
    public string PageState { get; }
}
