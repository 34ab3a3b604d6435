using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    /// <summary>
    /// ftruncate(2): sets the file's length on disk and in the cache. Shrinking unmaps the pages past the new end
    /// from every address space (an access there is then a bus error), drops them from the cache — dirty or not,
    /// as their data is no longer part of the file — and zeroes the rest of the last partial page; truncating to 0
    /// frees every page of the file.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="NotSupportedException">The file was opened read-only.</exception>
    /// <exception cref="IOException">The file's length could not be changed; nothing changed.</exception>
    public void Truncate(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ThrowIfDisposed();
        if (!_writable) throw new NotSupportedException($"page cache: {Path} was opened read-only.");
        lock (_inodeLock)
        {
            ThrowIfDisposed();
            long old = Volatile.Read(ref _size);
            _sizeLock.EnterWriteLock();
            try
            {
                RandomAccess.SetLength(_file, length); // first: when it fails, nothing has changed
                Volatile.Write(ref _size, length);
            }
            finally { _sizeLock.ExitWriteLock(); }
            if (length >= old) return;
            ulong firstGone = (ulong)((length + PageSize - 1) >> PageShift);
            // truncate_pagecache: unmap, drop, unmap again for faults that raced in between (they recheck i_size
            // under the page lock, so none can map a page past the end after the second pass).
            UnmapMappingRange(firstGone);
            TruncateInodePages(firstGone);
            UnmapMappingRange(firstGone);
            ZeroPartialPage(length);
        }
    }

    /// <summary>The bytes of the last page past the new end read as zeros (truncate_inode_partial_folio).</summary>
    private void ZeroPartialPage(long length)
    {
        int inPage = (int)(length & (PageSize - 1));
        if (inPage == 0) return;
        ulong index = (ulong)length >> PageShift;
        PageFrame* page = FindGetPage(index);
        if (page == null) return;
        PageWait.Lock(page);
        if (Owns(page, index)) _pages.MemzeroPage(page, inPage, PageSize - inPage);
        PageWait.Unlock(page);
        PutPage(page);
    }

    /// <summary>
    /// truncate_inode_pages from page <paramref name="firstIndex"/>: every page waits for its writeback and leaves the
    /// cache under its lock; after an RCU grace period the cache's references go. An emptied tree gives its nodes back.
    /// </summary>
    private void TruncateInodePages(ulong firstIndex)
    {
        Span<ulong> indices = stackalloc ulong[GangBatch];
        PageFrame** found = stackalloc PageFrame*[GangBatch];
        PageFrame** removed = stackalloc PageFrame*[GangBatch];
        ulong next = firstIndex;
        lock (_treeLock) _tree.DeleteValues(firstIndex); // the shadows of evicted pages past the end go too
        while (true)
        {
            int n = FindGetPages(next, ulong.MaxValue, -1, indices, found);
            if (n == 0) break;
            next = indices[n - 1] + 1;
            int gone = 0;
            for (int i = 0; i < n; i++)
            {
                PageFrame* page = found[i];
                PageWait.Lock(page);
                PageWait.WaitWhile(page, PageFlags.Writeback);
                if (Owns(page, indices[i]))
                {
                    DeleteFromPageCache(page, indices[i]);
                    removed[gone++] = page;
                }
                PageWait.Unlock(page);
                PutPage(page);
            }
            ReleaseRemoved(removed, gone);
        }
        FreeTreeIfEmpty();
    }

    /// <summary>
    /// Drops clean, unmapped, unlocked pages that only the cache holds (invalidate_mapping_pages; drop_caches and the
    /// shrinker). Never waits: a locked page or one under writeback is skipped, so any caller may run it. Returns the
    /// pages freed, at most <paramref name="budget"/>.
    /// </summary>
    internal long InvalidateCleanPages(long budget)
    {
        Span<ulong> indices = stackalloc ulong[GangBatch];
        PageFrame** found = stackalloc PageFrame*[GangBatch];
        PageFrame** removed = stackalloc PageFrame*[GangBatch];
        ulong next = 0;
        long freed = 0;
        while (freed < budget)
        {
            int n = FindGetPages(next, ulong.MaxValue, -1, indices, found);
            if (n == 0) break;
            next = indices[n - 1] + 1;
            int gone = 0;
            for (int i = 0; i < n; i++)
            {
                PageFrame* page = found[i];
                // Two references: the cache's and ours. Anything more is a user, a mapping or a reader.
                if (freed + gone < budget && Volatile.Read(ref page->_mapcount) == 0 && PageWait.TryLock(page))
                {
                    if (Owns(page, indices[i]) && (page->FlagsAndZone & (uint)(PageFlags.Dirty | PageFlags.Writeback)) == 0
                        && Volatile.Read(ref page->_mapcount) == 0 && Volatile.Read(ref page->_refcount) == 2)
                    {
                        DeleteFromPageCache(page, indices[i]);
                        removed[gone++] = page;
                    }
                    PageWait.Unlock(page);
                }
                PutPage(page);
            }
            ReleaseRemoved(removed, gone);
            freed += gone;
        }
        Interlocked.Add(ref _cache.Stats.Dropped, freed);
        if (freed > 0) FreeTreeIfEmpty();
        return freed;
    }

    /// <summary>Drops the cache's reference to pages just deleted from the tree, once no lookup can still see them.</summary>
    private void ReleaseRemoved(PageFrame** removed, int count)
    {
        if (count == 0) return;
        SynchronizeLookups();
        for (int i = 0; i < count; i++) PutPage(removed[i]);
    }

    /// <summary>An empty tree's nodes go back once no lockless walker can be inside them (the `: &gt; file` case).</summary>
    private void FreeTreeIfEmpty()
    {
        nint root;
        lock (_treeLock)
        {
            if (_nrPages != 0) return;
            root = _tree.Detach();
        }
        if (root == 0) return;
        SynchronizeLookups(); // walkers that read the old root are out
        PageTree.FreeDetached(root);
    }
}
