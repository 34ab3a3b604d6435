using System.Runtime.CompilerServices;
using Allocators.Kasan;
using Allocators.Physical;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    // KASAN's page guards (CheckedModeOptions.KasanPageGuards). An allocation of order n < MaxOrder takes a block of
    // order n + 1: the caller gets the lower half, and the upper half stays allocated as the guard (PageFlags.Guard on
    // its first frame, Private = the block's frame, Order = n), poisoned PageGuard, so any access past the block's end is
    // reported whatever the buddy hands out next. Freeing the block frees both halves as one order n + 1 block, so the
    // buddy sees exactly the blocks it handed out; the guard alone is never freeable (Guard is in FreeCheckMask). The
    // per-thread lists never serve allocations in this mode (the preferred-zone table is empty), so every allocation
    // reaches AllocPagesSlow, where the guard is added, and nothing on the fast paths tests the mode.
    //
    // Invariant: a frame has Guard ⇔ it is frame 2^n of an allocated order-(n + 1) block whose lower half is the live
    // allocation at Private, and Order = n.

    /// <summary>True when page allocations get a guard block after them (KASAN with <c>kasan.page_guards</c>).</summary>
    private readonly bool _pageGuards;

    /// <summary>
    /// Allocates 2^<paramref name="order"/> pages followed by a guard of the same size: a block twice as large from
    /// <see cref="AllocPagesSlowCore"/>, its upper half made the guard.
    /// </summary>
    private PageFrame* AllocGuarded(Gfp gfp, int order, int node, int cpuNode)
    {
        PageFrame* block = AllocPagesSlowCore(gfp & ~Gfp.Comp, order + 1, node, cpuNode);
        if (block == null) return null;
        PageFrame* guard = block + (1L << order);
        block->_order = order;
        guard->FlagsAndZone = (guard->FlagsAndZone & ~PageFrame.FlagMask) | (uint)(PageFlags.Allocated | PageFlags.Guard);
        guard->_order = order;
        *(ulong*)&guard->_refcount = 1;
        guard->Private = (nuint)block;
        guard->Next = guard->Prev = null;
        _kasan!.Poison(AddressOf(guard), (nuint)PageFrame.PageSize << order, KasanShadowCode.PageGuard);
        if ((gfp & Gfp.Comp) != 0 && order > 0) PrepCompound(block, order);
        return block;
    }

    /// <summary>
    /// A block of 2^<paramref name="order"/> pages is being freed: when a guard follows it, the guard's frame is made an
    /// ordinary frame of the block again and the order of the whole (order + 1) is returned, so both halves go back as
    /// the one block the buddy handed out; otherwise <paramref name="order"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int TakeBackGuard(PageFrame* page, int order)
    {
        PageFrame* guard = GuardOf(page, order);
        if (guard == null) return order;
        guard->FlagsAndZone &= ~PageFrame.FlagMask;
        guard->_order = 0;
        *(ulong*)&guard->_refcount = 0;
        guard->Private = 0;
        page->_order = order + 1;
        return order + 1;
    }

    /// <summary>split_page of a guarded block: the guard goes back to the buddy first (its pages are not the caller's to free).</summary>
    private void FreeGuardOf(PageFrame* page, int order)
    {
        PageFrame* guard = GuardOf(page, order);
        if (guard == null) return;
        guard->FlagsAndZone &= ~(ulong)(uint)PageFlags.Guard;
        guard->Private = 0;
        FreePages(guard, order);
    }

    /// <summary>The guard after the block of 2^<paramref name="order"/> pages at <paramref name="page"/>, or null when it has none.</summary>
    private static PageFrame* GuardOf(PageFrame* page, int order)
    {
        // Only a lower half has its guard inside the same order-(n + 1) block, whose frames are all valid.
        if (order >= MaxOrder || ((page->Pfn >> order) & 1) != 0) return null;
        PageFrame* guard = page + (1L << order);
        return (guard->FlagsAndZone & (uint)PageFlags.Guard) != 0 && guard->Private == (nuint)page && guard->Order == order ? guard : null;
    }

    /// <summary>KASAN's description of an address in a guard block: whose guard it is.</summary>
    private string? DescribeGuard(PageFrame* page, nuint address)
    {
        PageFrame* guard = page;
        while ((guard->FlagsAndZone & (uint)PageFlags.Guard) == 0)
        {
            if (guard->Pfn == 0 || page->Pfn - guard->Pfn >= (1UL << (MaxOrder - 1))) return null;
            guard--;
        }
        var block = (PageFrame*)guard->Private;
        nuint start = (nuint)AddressOf(block);
        nuint end = start + ((nuint)PageFrame.PageSize << guard->Order);
        return string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"The buggy address is {address - end} bytes past the end of the {1L << guard->Order}-page block at {start:x16} (pfn 0x{block->Pfn:x}, order {guard->Order}), in its guard\n");
    }
}
