using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Mmu;

/// <summary>
/// The page cache's copies of high pages (filemap_read's copy_page_to_iter, generic_perform_write's
/// copy_page_from_iter, zeroing a partial page): each maps the page with <see cref="KmapLocal"/>, resolves the mapped
/// address through the kernel page tables (the map prefilled the TLB; KASAN checks the range), copies within that one
/// page, and unmaps. Registered with the page allocator on a split arena.
/// </summary>
public sealed unsafe partial class KernelAddressSpace : IHighmemMapper
{
    bool IHighmemMapper.CopyFromPage(Span<byte> to, PageFrame* page, int offset)
    {
        if (IsDisposed) return false;
        ulong va = KmapLocal(page);
        try { GetSpan(va + (ulong)offset, to.Length, write: false).CopyTo(to); }
        finally { KunmapLocal(va); }
        return true;
    }

    bool IHighmemMapper.CopyToPage(PageFrame* page, int offset, ReadOnlySpan<byte> from)
    {
        if (IsDisposed) return false;
        ulong va = KmapLocal(page);
        try { from.CopyTo(GetSpan(va + (ulong)offset, from.Length, write: true)); }
        finally { KunmapLocal(va); }
        return true;
    }

    bool IHighmemMapper.ZeroPage(PageFrame* page, int offset, int length)
    {
        if (IsDisposed) return false;
        ulong va = KmapLocal(page);
        try { GetSpan(va + (ulong)offset, length, write: true).Clear(); }
        finally { KunmapLocal(va); }
        return true;
    }
}
