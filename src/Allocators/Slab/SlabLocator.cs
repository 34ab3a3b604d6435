using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>
/// virt_to_slab for the flat arena, copied into per-thread handles: the head frame of the slab holding an address and
/// the address's offset from the slab's first byte, from a subtraction, a shift and one or two frame reads.
/// </summary>
/// <remarks>Empty (finds nothing) on a sparse arena, whose callers take the general path.</remarks>
internal readonly unsafe struct SlabLocator
{
    private readonly nuint _base;
    private readonly nuint _bytes;
    private readonly PageFrame* _memMap;

    public SlabLocator(PhysicalMemory memory)
    {
        (nint memMap, _) = memory.FlatMemMap;
        (nint arenaBase, nuint bytes) = memory.FlatRange;
        _base = (nuint)arenaBase;
        _bytes = bytes;
        _memMap = (PageFrame*)memMap;
    }

    /// <summary>The owner of <see cref="NotASlab"/>: no objects (every offset is refused) and no kmalloc class.</summary>
    /// <remarks>Declared before <see cref="NotASlab"/>, which points at it: static fields initialise in order.</remarks>
    public static readonly KmemCacheData* NoCache = CreateNoCache();

    /// <summary>
    /// What <see cref="Find"/> returns for an address outside the slab pages of the flat arena: a frame that belongs to
    /// no cache (its owner is <see cref="NoCache"/>, a cache without slots and with no kmalloc class), so the callers'
    /// owner and offset tests refuse it without a null test of their own.
    /// </summary>
    public static readonly PageFrame* NotASlab = CreateNotASlab();

    private static KmemCacheData* CreateNoCache()
    {
        var d = (KmemCacheData*)NativeMemory.AlignedAlloc((nuint)sizeof(KmemCacheData), 64);
        *d = default;
        d->KmallocIndex = -1;
        return d;
    }

    private static PageFrame* CreateNotASlab()
    {
        var page = (PageFrame*)NativeMemory.AlignedAlloc((nuint)sizeof(PageFrame), 64);
        *page = default;
        page->FlagsAndZone = SlabPage.KmallocClassBits(-1);
        page->Private = (nuint)NoCache;
        return page;
    }

    /// <summary>
    /// The head frame of the slab holding <paramref name="address"/> and the address's offset from the slab's first
    /// byte; <see cref="NotASlab"/> (never null) when it is not in a slab page of the flat arena.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public SlabAddress Find(void* address)
    {
        nuint flat = (nuint)address - _base;
        if (flat < _bytes)
        {
            PageFrame* page = _memMap + (flat >> PageFrame.PageShift);
            ulong flags = page->FlagsAndZone;
            if ((flags & (ulong)(PageFlags.Slab | PageFlags.Tail)) == (ulong)PageFlags.Slab)
                return new SlabAddress(page, flat & (PageFrame.PageSize - 1));
            if ((flags & (ulong)PageFlags.Tail) != 0) return FindHead(page, flat);
        }
        return new SlabAddress(NotASlab, 0);
    }

    private SlabAddress FindHead(PageFrame* tail, nuint flat)
    {
        var head = (PageFrame*)tail->Private;
        if ((head->FlagsAndZone & (ulong)PageFlags.Slab) == 0) return new SlabAddress(NotASlab, 0);
        return new SlabAddress(head, flat - ((nuint)(head - _memMap) << PageFrame.PageShift));
    }
}

/// <summary>A slab's head frame and an address's offset from the slab's first byte.</summary>
internal readonly unsafe struct SlabAddress(PageFrame* slab, nuint offset)
{
    public readonly PageFrame* Slab = slab;
    public readonly nuint Offset = offset;
}
