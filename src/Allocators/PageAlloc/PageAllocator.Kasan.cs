using System.Globalization;
using System.Runtime.CompilerServices;
using Allocators.Kasan;
using Allocators.Physical;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    /// <summary>The arena's KASAN shadow when the checked mode is on (the hot paths test it once); otherwise null.</summary>
    private readonly KasanShadow? _kasan;

    /// <summary>A block going back to the free lists becomes <see cref="KasanShadowCode.PageFree"/> (kasan_poison_pages).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void KasanPoisonFree(PageFrame* page, int order)
        => _kasan!.Poison(AddressOf(page), (nuint)PageFrame.PageSize << order, KasanShadowCode.PageFree);

    /// <summary>KASAN's description of a page-allocator address: the page and its state.</summary>
    internal string? KasanDescribePage(nuint address)
    {
        PageFrame* page = _memory.VirtToPage((void*)address);
        if (page == null) return null;
        PageFrame* head = PageFrame.CompoundHead(page);
        return string.Create(CultureInfo.InvariantCulture,
            $"The buggy address belongs to the physical page:\npage: pfn:0x{page->Pfn:x} head pfn:0x{head->Pfn:x} order:{head->Order}\nflags: {head->Describe()}\n"
            + $"The buggy address is located {address - (nuint)AddressOf(head)} bytes inside of the block at {(nuint)AddressOf(head):x16}\n");
    }
}
