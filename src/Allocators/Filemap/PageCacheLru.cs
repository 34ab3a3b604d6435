using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Filemap;

/// <summary>
/// The page cache as reclaim sees it (the file half of mm/vmscan.c): its pages sit on the file LRU lists, and a cold
/// page is unmapped, written back when dirty (only with __GFP_FS) and dropped by its file.
/// </summary>
internal sealed unsafe class PageCacheLru(PageCache cache) : ILruOwner
{
    /// <inheritdoc/>
    public bool CanReclaim => cache.Stats.FilePages > 0;

    /// <inheritdoc/>
    public int Referenced(PageFrame* page)
    {
        FileMapping? file = cache.MappingOf((int)page->Private);
        return file == null ? 0 : file.ReferencedPtes(page, page->Data0);
    }

    /// <inheritdoc/>
    public PageReclaim ReclaimPage(PageFrame* page, Gfp gfp, ReclaimCounters counters)
    {
        FileMapping? file = cache.MappingOf((int)page->Private);
        if (file == null || !file.TryBeginWalk()) return PageReclaim.Keep;
        try { return file.ReclaimPage(page, page->Data0, gfp, counters); }
        finally { file.EndWalk(); }
    }

    /// <inheritdoc/>
    public bool FreezeDeleted(PageFrame* page) => FileMapping.FreezeDeleted(cache, page);
}
