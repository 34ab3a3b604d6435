using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Kasan;
using Allocators.Physical;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>The arena's KASAN shadow when the checked mode is on (the hot paths test it once); otherwise null.</summary>
    private readonly KasanShadow? _kasan;

    /// <summary>
    /// A freed block (poisoned, its last reference gone) waits in KASAN's quarantine before it reaches the free lists,
    /// so a use after free of a page hits poison instead of the next owner's data. Its link is in its head page's
    /// page_ext words, which a free block's owner (none) leaves alone, so the freed memory itself is untouched (and stays
    /// zero with init_on_free). It is neither allocated nor free meanwhile: a second free of it is refused
    /// (<see cref="FreeCheckMask"/>), and <see cref="DrainAllPages"/> and the slab shrinker under memory pressure give it
    /// back.
    /// </summary>
    private void KasanQuarantinePages(PageFrame* page, int order)
    {
        page->FlagsAndZone &= ~(ulong)(uint)(PageFlags.Allocated | PageFlags.PfMemAlloc);
        page->_order = order;
        _kasan!.Quarantine.Put((QuarantineLink*)_memory.ExtOf(page), KasanQuarantine.PageOwner, page, (long)PageFrame.PageSize << order);
    }

    /// <summary>A block leaves the quarantine for the free lists; its page_ext words are zero again for the next owner.</summary>
    private void KasanReleasePages(nint owner, nint frame)
    {
        var page = (PageFrame*)frame;
        NativeMemory.Clear(_memory.ExtOf(page), (nuint)sizeof(QuarantineLink));
        FreeToZone(page, page->Order);
    }

    /// <summary>A block going back to the free lists becomes <see cref="KasanShadowCode.PageFree"/> (kasan_poison_pages).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void KasanPoisonFree(PageFrame* page, int order)
        => _kasan!.Poison(AddressOf(page), (nuint)PageFrame.PageSize << order, KasanShadowCode.PageFree);

    /// <summary>
    /// The checks <see cref="FreePages(PageFrame*, int)"/> makes, without freeing: for a block that waits in KASAN's
    /// quarantine, so that a corrupted block is refused when it is freed rather than when the quarantine lets it go.
    /// </summary>
    /// <exception cref="Common.BadPageException">The block is not a live, single-reference allocation of <paramref name="order"/>.</exception>
    internal void CheckFreeable(PageFrame* page, int order)
    {
        if (!_memory.IsValidFrame(page) || (page->FlagsAndZone & (uint)FreeCheckMask) != (uint)PageFlags.Allocated || page->Order != order)
            ThrowBadFree(page, order, "free_pages");
        if (page->Has(PageFlags.Head)) ValidateCompound(page, order);
    }

    /// <summary>KASAN's description of a page-allocator address: the page and its state.</summary>
    internal string? KasanDescribePage(nuint address)
    {
        PageFrame* page = _memory.VirtToPage((void*)address);
        if (page == null) return null;
        if (_pageGuards && DescribeGuard(page, address) is { } guard) return guard;
        PageFrame* head = PageFrame.CompoundHead(page);
        return string.Create(CultureInfo.InvariantCulture,
            $"The buggy address belongs to the physical page:\npage: pfn:0x{page->Pfn:x} head pfn:0x{head->Pfn:x} order:{head->Order}\nflags: {head->Describe()}\n"
            + $"The buggy address is located {address - (nuint)AddressOf(head)} bytes inside of the block at {(nuint)AddressOf(head):x16}\n");
    }
}
