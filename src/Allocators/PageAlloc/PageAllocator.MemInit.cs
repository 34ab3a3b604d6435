using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.PageAlloc;

public sealed unsafe partial class PageAllocator
{
    // The hardening modes of the page allocator (CheckedModeOptions), fixed at construction: init_on_alloc,
    // init_on_free (post_alloc_hook / free_pages_prepare) and page_alloc.shuffle (mm/shuffle.c).

    /// <summary>
    /// OR-ed into every request's flags before <see cref="PrepNewPage"/> tests them: <see cref="Gfp.Zero"/> with
    /// init_on_alloc on and init_on_free off, else nothing. With init_on_free on every free page is zero already
    /// (zeroed when freed, or when its memory came online), so neither init_on_alloc nor <see cref="Gfp.Zero"/> clears
    /// it again, as the kernel's post_alloc_hook skips the clear when want_init_on_free().
    /// </summary>
    private readonly Gfp _initGfp;

    /// <summary>init_on_free: every block is cleared before it reaches a per-thread list or a free area.</summary>
    private readonly bool _initOnFree;

    /// <summary>page_alloc.shuffle: max-order free lists shuffled when memory comes online, freed max-order blocks put at a random end.</summary>
    private readonly bool _shuffle;

    /// <summary>The page allocator's hardening modes, from the arena's <see cref="CheckedModeOptions"/>.</summary>
    private static (Gfp InitGfp, bool InitOnFree, bool Shuffle) MemInitModes(CheckedModeOptions checks)
        => (checks.InitOnAlloc && !checks.InitOnFree ? Gfp.Zero : 0, checks.InitOnFree, checks.ShufflePages);

    /// <summary>True when <see cref="PrepNewPageSlow"/> must clear a new block (want_init_on_alloc, unless init_on_free did it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool WantInitOnAlloc(Gfp gfp) => (gfp & Gfp.Zero) != 0 && !_initOnFree;

    /// <summary>True when a freed block needs <see cref="FreeHooks"/>: init_on_free or KASAN is on (one test on the free paths for both).</summary>
    private readonly bool _freeHooks;

    /// <summary>
    /// free_pages_prepare's checked-mode work on a block whose last reference is gone: take back its KASAN guard, clear
    /// it (init_on_free), poison its shadow (KASAN), in the kernel's order, and with KASAN hold it in the quarantine.
    /// Returns the order of what the caller frees: <paramref name="order"/>, one more when the block's guard goes back
    /// with it, or -1 when the quarantine took it.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int FreeHooks(PageFrame* page, int order)
    {
        // A block whose first bytes are poisoned already is the slab layer's (an empty slab, whose objects waited in the
        // quarantine one by one, or a large kmalloc leaving it): it is not held a second time.
        bool quarantine = _kasan != null && _kasan.IsAccessible(AddressOf(page), 1);
        if (_pageGuards) order = TakeBackGuard(page, order);
        if (_initOnFree) NativeMemory.Clear(AddressOf(page), (nuint)PageFrame.PageSize << order);
        if (_kasan != null) KasanPoisonFree(page, order);
        if (!quarantine) return order;
        ObjectDisposedException.ThrowIf(_disposed, this);
        KasanQuarantinePages(page, order);
        return -1;
    }

    /// <summary>
    /// Makes a max-order block of memory coming online zero when init_on_free promises that every free page is: given
    /// back to the host (which hands back zeros), or cleared where that is not possible.
    /// </summary>
    private void InitOnlineBlock(PageFrame* block)
    {
        if (!_memory.Discard(block, MaxOrder)) NativeMemory.Clear(AddressOf(block), (nuint)PageFrame.PageSize << MaxOrder);
    }

    /// <summary>
    /// True when a freed block of <paramref name="order"/> goes to the tail of its free list (shuffle_pick_tail): a
    /// coin toss for max-order blocks with shuffling on, so the next max-order block handed out is not the last freed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool ShufflePickTail(int order) => order == MaxOrder && _shuffle && (Random.Shared.Next() & 1) != 0;

    /// <summary>
    /// Shuffles every zone's max-order free list (shuffle_free_memory / __shuffle_zone), Fisher-Yates over the
    /// blocks, so the order in which memory is handed out after boot or a hot-add differs from run to run.
    /// </summary>
    private void ShuffleFreeMemory()
    {
        if (!_shuffle) return;
        for (int z = 0; z < _zoneCount; z++)
        {
            ZoneData* zone = _zones + z;
            NativeSpinLock.Acquire(&zone->Lock);
            try { ShuffleFreeArea(ZoneData.Area(zone, MaxOrder)); }
            finally { NativeSpinLock.Release(&zone->Lock); }
        }
    }

    /// <summary>Relinks a free area's blocks in a random order (zone lock held); counts and flags are unchanged.</summary>
    private static void ShuffleFreeArea(FreeArea* area)
    {
        long count = area->Count;
        if (count < 2) return;
        var blocks = new PageFrame*[count];
        long i = 0;
        for (PageFrame* p = area->Head; p != null; p = p->Next) blocks[i++] = p;
        for (long k = count - 1; k > 0; k--)
        {
            long j = Random.Shared.NextInt64(k + 1);
            PageFrame* swap = blocks[k];
            blocks[k] = blocks[j];
            blocks[j] = swap;
        }
        for (long k = 0; k < count; k++)
        {
            blocks[k]->Prev = k > 0 ? blocks[k - 1] : null;
            blocks[k]->Next = k < count - 1 ? blocks[k + 1] : null;
        }
        area->Head = blocks[0];
        area->Tail = blocks[count - 1];
    }
}
