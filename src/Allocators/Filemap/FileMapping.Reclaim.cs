using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    /// <summary>Page writes reclaim started on the calling thread (tests check which reclaim did file I/O).</summary>
    [ThreadStatic] internal static long t_reclaimWrites;

    /// <summary>
    /// page_referenced for a page of this file: the mappings' accessed bits, read and cleared with trylocks (an
    /// address space whose locks are busy counts as a reference: reclaim does not wait).
    /// </summary>
    internal int ReferencedPtes(PageFrame* page, ulong index)
    {
        if (Volatile.Read(ref page->_mapcount) == 0) return 0;
        int young = 0;
        foreach (var (mapper, _) in _mappers.Snapshot) young += mapper.ReferencedTry(this, index, page);
        return young;
    }

    /// <summary>
    /// The file half of shrink_folio_list for a locked, isolated page of this file: unmapped from every address space
    /// (their dirty bits folded into PG_dirty), written back if dirty and <paramref name="gfp"/> has __GFP_FS, then
    /// deleted from the cache: <see cref="PageReclaim.Deleted"/>, after which the caller waits out lookups that may have
    /// seen it, once for its whole batch, and freezes its count (<see cref="FreezeDeleted"/>).
    /// </summary>
    internal PageReclaim ReclaimPage(PageFrame* page, ulong index, Gfp gfp, ReclaimCounters counters)
    {
        // A reclaimer inside an RCU read section cannot wait for the grace period the delete needs.
        if (!Owns(page, index) || page->Has(PageFlags.Writeback) || _pages.Rcu.InReadSection) return PageReclaim.Keep;
        if (Volatile.Read(ref page->_mapcount) > 0)
        {
            foreach (var (mapper, _) in _mappers.Snapshot) mapper.TryUnmap(this, index, page);
            if (Volatile.Read(ref page->_mapcount) > 0) return PageReclaim.Activate;
        }
        if (page->Has(PageFlags.Dirty))
        {
            if ((gfp & Gfp.Fs) == 0)
            {
                Interlocked.Increment(ref counters.NoFsSkipped);
                return PageReclaim.Keep;
            }
            TlbUnmapBatch.Current?.FlushDirty(); // no writable translation may outlive the write
            if (!PageOut(page, index)) return PageReclaim.Activate;
        }
        // __remove_mapping: the cache's reference and the isolation's, nothing else.
        if (Volatile.Read(ref page->_refcount) != 2 || page->Has(PageFlags.Dirty)) return PageReclaim.Keep;
        DeleteFromPageCache(page, index, Workingset.Eviction(_pages, page));
        return PageReclaim.Deleted;
    }

    /// <summary>
    /// __remove_mapping's freeze for a page <see cref="ReclaimPage"/> deleted, once a grace period has passed since: the
    /// cache's reference and the isolation's are the only ones left, and both go at once. Otherwise a lookup that began
    /// before the delete still holds the page: the cache's reference is dropped and the lookup will see it gone.
    /// </summary>
    internal static bool FreezeDeleted(PageCache cache, PageFrame* page)
    {
        if (Interlocked.CompareExchange(ref page->_refcount, 0, 2) == 2)
        {
            Interlocked.Increment(ref cache.Stats.Dropped);
            return true;
        }
        cache.Pages.PutPage(page);
        return false;
    }

    /// <summary>
    /// pageout: writes one locked, unmapped, dirty page (the reclaim half of writepage). The file's size lock is only
    /// tried (a truncation holding it may be waiting for memory). False when the page stays dirty: busy, or the write
    /// failed (recorded for the next fsync).
    /// </summary>
    private bool PageOut(PageFrame* page, ulong index)
    {
        if (!_sizeLock.TryEnterReadLock(0)) return false;
        try
        {
            if ((PageWait.Clear(page, PageFlags.Dirty) & PageFlags.Dirty) == 0) return true;
            SetWriteback(page, index);
            t_reclaimWrites++;
            _pages.GetPage(page); // WriteRunLocked drops one reference per page
            IOException? failure = null;
            PageFrame* one = page;
            WriteRunLocked(index, &one, 1, ref failure);
            if (failure != null)
            {
                RecordError(failure);
                return false;
            }
            Interlocked.Increment(ref _cache.Stats.ReclaimWrites);
            return true;
        }
        finally { _sizeLock.ExitReadLock(); }
    }
}
