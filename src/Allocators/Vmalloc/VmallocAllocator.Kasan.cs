using Allocators.Kasan;
using Allocators.Physical;

namespace Allocators.Vmalloc;

public sealed unsafe partial class VmallocAllocator
{
    /// <summary>The arena's KASAN shadow when the checked mode is on; otherwise null.</summary>
    private KasanShadow? Kasan => _pages.Memory.Kasan;

    /// <summary>
    /// The bytes of an area's last page past the requested <paramref name="size"/> are invalid vmalloc space
    /// (kasan_unpoison_vmalloc keeps only the requested size); the guard page after the area is not mapped, and the
    /// kernel space reports a fault there as vmalloc-out-of-bounds.
    /// </summary>
    private void KasanPoisonTail(PageFrame* last, ulong size)
    {
        int used = (int)(size & (PageFrame.PageSize - 1));
        if (used == 0) return;
        byte* bytes = _pages.AddressOf(last);
        int start = (used + 7) & ~7;
        Kasan!.Poison(bytes + start, (nuint)(PageFrame.PageSize - start), KasanShadowCode.VmallocInvalid);
        Kasan.Unpoison(bytes, (nuint)used);
    }
}
