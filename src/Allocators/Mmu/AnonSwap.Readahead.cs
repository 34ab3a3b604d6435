using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Swap;

namespace Allocators.Mmu;

internal sealed unsafe partial class AnonSwap
{
    /// <summary>page-cluster 3: swap readahead reads at most 2^3 = 8 slots, aligned, around the faulting one.</summary>
    public const int MaxReadaheadPages = 8;

    // __swapin_nr_pages' state: hits on readahead pages since the last fault that read, the last window, the last slot.
    private int _readaheadHits;
    private int _lastReadaheadPages;
    private long _prevOffset;

    /// <summary>
    /// __swapin_nr_pages: how many slots to read around <paramref name="offset"/>. Readahead pages that were used
    /// since the last read (hits) grow the window; with none it is one page unless the fault is next to the last one;
    /// a window shrinks by half at most per fault.
    /// </summary>
    private int SwapinNrPages(ulong offset)
    {
        int hits = Interlocked.Exchange(ref _readaheadHits, 0);
        long prev = Interlocked.Exchange(ref _prevOffset, (long)offset);
        int pages = hits + 2;
        if (pages == 2)
        {
            if ((long)offset != prev + 1 && (long)offset != prev - 1) pages = 1;
        }
        else
        {
            pages = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)pages);
        }
        pages = Math.Min(pages, MaxReadaheadPages);
        int last = Volatile.Read(ref _lastReadaheadPages);
        if (pages < last) pages = last / 2;
        Volatile.Write(ref _lastReadaheadPages, pages);
        return Math.Max(pages, 1);
    }

    /// <summary>A swap-cache hit on a page readahead brought in: counts it (swap_ra_hit) and widens the next window.</summary>
    private void NoteReadaheadHit(PageFrame* page)
    {
        if ((PageFrame.ClearFlags(page, PageFlags.Readahead) & PageFlags.Readahead) == 0) return;
        Interlocked.Increment(ref _readaheadHits);
        Interlocked.Increment(ref _counters.SwapRaHit);
    }

    /// <summary>
    /// swap_cluster_readahead around the slot just read: the other slots of its aligned window that some PTE still
    /// holds and that are not cached are read into the swap cache (one vectored read per run), marked PG_readahead and
    /// put on the inactive list, unmapped. Best effort: no memory without reclaim, a busy slot or a failed read only
    /// means fewer pages ahead.
    /// </summary>
    private void Readahead(SwapDevice device, SwapEntry target)
    {
        int window = SwapinNrPages(target.Offset);
        if (window <= 1) return;
        ulong start = target.Offset & ~(ulong)(window - 1);
        ulong end = Math.Min(start + (ulong)window, device.MaxPages);
        if (start == 0) start = 1;
        PageFrame** run = stackalloc PageFrame*[MaxReadaheadPages];
        byte** dsts = stackalloc byte*[MaxReadaheadPages];
        int count = 0;
        ulong runStart = 0;
        for (ulong offset = start; offset <= end; offset++)
        {
            PageFrame* page = offset < end && offset != target.Offset ? PrepareReadahead(device, new SwapEntry(device.Type, offset)) : null;
            if (page != null)
            {
                if (count == 0) runStart = offset;
                run[count] = page;
                dsts[count] = (byte*)_pages.AddressOf(page);
                count++;
                continue;
            }
            if (count > 0) FinishReadahead(device, runStart, run, dsts, count);
            count = 0;
        }
    }

    /// <summary>A locked, cached, not-yet-read page for <paramref name="entry"/>, or null when it is not worth reading.</summary>
    private PageFrame* PrepareReadahead(SwapDevice device, SwapEntry entry)
    {
        if (device.SwapCount(entry) == 0 || device.HasCache(entry)) return null;
        PageFrame* page = _pages.AllocPages((Gfp.HighUserMovable & ~Gfp.DirectReclaim) | Gfp.NoWarn, 0);
        if (page == null) return null;
        if (!device.SwapcachePrepare(entry))
        {
            _pages.FreePages(page, 0);
            return null;
        }
        page->FlagsAndZone |= (uint)(PageFlags.Anon | PageFlags.SwapBacked | PageFlags.Locked | PageFlags.Readahead);
        if (!Cache.Add(page, entry)) throw new InvalidOperationException($"swap cache: {entry} is cached though SWAP_HAS_CACHE was clear.");
        return page;
    }

    /// <summary>Reads a run of prepared readahead pages; each ends up unlocked in the cache, or out of it if the read failed.</summary>
    private void FinishReadahead(SwapDevice device, ulong first, PageFrame** pages, byte** dsts, int count)
    {
        bool ok;
        try
        {
            ok = device.ReadPages((uint)first, count, dsts) == count;
        }
        catch (IOException)
        {
            ok = false;
        }
        for (int i = 0; i < count; i++)
        {
            PageFrame* page = pages[i];
            var entry = new SwapEntry(device.Type, first + (ulong)i);
            if (ok)
            {
                PageFrame.SetFlags(page, PageFlags.Uptodate);
                _pages.Lru.Add(page, _pages.NodeOf(page));
                PageWait.Unlock(page);
                _pages.PutPage(page); // the cache's reference keeps it
                Interlocked.Increment(ref _counters.PswpIn);
                Interlocked.Increment(ref _counters.SwapRa);
            }
            else
            {
                DiscardUnreadPage(page, entry);
            }
        }
    }
}
