using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>
/// The kernel address space's way into high-memory frames for the layers beside it (the page cache): each call maps
/// the frame with kmap_local_page, copies through the software MMU at the mapped address, and unmaps. Registered with
/// the page allocator by the kernel address space when the arena has a low/high split (the MMU is not below the page
/// cache, so it reaches down through this instead of being named).
/// </summary>
internal unsafe interface IHighmemMapper
{
    /// <summary>Copies <paramref name="to"/>.Length bytes from <paramref name="offset"/> in <paramref name="page"/>; false if the kernel is gone.</summary>
    bool CopyFromPage(Span<byte> to, PageFrame* page, int offset);

    /// <summary>Copies <paramref name="from"/> to <paramref name="offset"/> in <paramref name="page"/>; false if the kernel is gone.</summary>
    bool CopyToPage(PageFrame* page, int offset, ReadOnlySpan<byte> from);

    /// <summary>Zeroes <paramref name="length"/> bytes from <paramref name="offset"/> in <paramref name="page"/>; false if the kernel is gone.</summary>
    bool ZeroPage(PageFrame* page, int offset, int length);
}
