using System.Runtime.CompilerServices;
using Allocators.Physical;

namespace Allocators.PageAlloc;

/// <summary>
/// highmem.h's copy helpers (memcpy_from_page, memcpy_to_page, memzero_page) for layers that copy file data in and
/// out of pages: a low page is copied at its host address (the direct map), a high page through a local kmap of the
/// registered <see cref="IHighmemMapper"/>, as the kernel's filemap_read and generic_perform_write do. Without a split,
/// or before the kernel address space exists, every page is copied at its host address.
/// </summary>
public sealed unsafe partial class PageAllocator
{
    private IHighmemMapper? _highmemMapper;

    /// <summary>Registers the kernel's kmap path for high pages (the MMU does it when it is built on a split arena).</summary>
    internal void SetHighmemMapper(IHighmemMapper mapper) => Volatile.Write(ref _highmemMapper, mapper);

    /// <summary>Unregisters <paramref name="mapper"/> if it is the registered one (its kernel is going away).</summary>
    internal void ClearHighmemMapper(IHighmemMapper mapper) => Interlocked.CompareExchange(ref _highmemMapper, null, mapper);

    /// <summary>memcpy_from_page: <paramref name="to"/>.Length bytes from <paramref name="offset"/> in <paramref name="page"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void MemcpyFromPage(Span<byte> to, PageFrame* page, int offset)
    {
        if (!IsHighPage(page) || !CopyFromHighPage(to, page, offset))
            new ReadOnlySpan<byte>((byte*)AddressOf(page) + offset, to.Length).CopyTo(to);
    }

    /// <summary>memcpy_to_page: <paramref name="from"/> to <paramref name="offset"/> in <paramref name="page"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void MemcpyToPage(PageFrame* page, int offset, ReadOnlySpan<byte> from)
    {
        if (!IsHighPage(page) || !CopyToHighPage(page, offset, from))
            from.CopyTo(new Span<byte>((byte*)AddressOf(page) + offset, from.Length));
    }

    /// <summary>memzero_page: <paramref name="length"/> bytes from <paramref name="offset"/> in <paramref name="page"/>.</summary>
    internal void MemzeroPage(PageFrame* page, int offset, int length)
    {
        if (!IsHighPage(page) || !ZeroHighPage(page, offset, length))
            new Span<byte>((byte*)AddressOf(page) + offset, length).Clear();
    }

    /// <summary>PageHighMem, from the page's zone: false on an arena without a split.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool IsHighPage(PageFrame* page) => HasHighMem && ZoneTypeOf(page) == ZoneType.HighMem;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool CopyFromHighPage(Span<byte> to, PageFrame* page, int offset)
        => Volatile.Read(ref _highmemMapper)?.CopyFromPage(to, page, offset) == true;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool CopyToHighPage(PageFrame* page, int offset, ReadOnlySpan<byte> from)
        => Volatile.Read(ref _highmemMapper)?.CopyToPage(page, offset, from) == true;

    private bool ZeroHighPage(PageFrame* page, int offset, int length)
        => Volatile.Read(ref _highmemMapper)?.ZeroPage(page, offset, length) == true;
}
