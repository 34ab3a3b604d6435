using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    private const int PageShift = PageFrame.PageShift;
    private const int PageSize = PageFrame.PageSize;

    /// <summary>The gfp mask of the mapping's page-cache allocations (mapping_gfp_mask).</summary>
    internal const Gfp MappingGfp = Gfp.HighUserMovable;

    /// <summary>
    /// read(2) at <paramref name="offset"/> through the cache (filemap_read): copies cached pages without a lock or a
    /// system call, reads missing ones with readahead, and returns fewer bytes than asked at end of file (0 at or past it).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is negative.</exception>
    /// <exception cref="IOException">Reading the file failed; pages read before the error stay cached.</exception>
    /// <exception cref="OutOfMemoryException">No page for the cache.</exception>
    public int Read(long offset, Span<byte> buffer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ThrowIfDisposed();
        long size = Volatile.Read(ref _size);
        if (offset >= size || buffer.IsEmpty) return 0;
        int total = (int)Math.Min(buffer.Length, size - offset);
        ulong lastIndex = (ulong)(offset + total - 1) >> PageShift;
        int done = 0;
        while (done < total)
        {
            // Runs of plain hits are copied with one RCU read section; the page that ends a run (a miss, a
            // read in flight, a readahead marker) takes the per-page path below.
            done += CopyCachedRun(offset + done, buffer[done..total]);
            if (done == total) break;
            long position = offset + done;
            ulong index = (ulong)position >> PageShift;
            int inPage = (int)(position & (PageSize - 1));
            int n = Math.Min(PageSize - inPage, total - done);
            Span<byte> target = buffer.Slice(done, n);
            int requested = (int)Math.Min(lastIndex - index + 1, int.MaxValue);
            CopyResult result = TryCopyCached(index, inPage, target);
            switch (result)
            {
                case CopyResult.Miss:
                    SyncReadahead(index, requested);
                    // The window just read may start with its marker (a large request): the next window starts now.
                    if (CopyFromPage(index, inPage, target)) AsyncReadahead(index, requested);
                    break;
                case CopyResult.HitMarker:
                    AsyncReadahead(index, requested);
                    break;
                case CopyResult.Pending:
                case CopyResult.PendingMarker:
                    // In the cache with its read in flight: the window that holds it is already under way, so only
                    // wait (filemap_update_page); a sync readahead here would restart the window at its smallest.
                    bool marker = result == CopyResult.PendingMarker;
                    if (marker) AsyncReadahead(index, requested);
                    if (CopyFromPage(index, inPage, target) && !marker) AsyncReadahead(index, requested);
                    break;
            }
            done += n;
        }
        _ra.PrevIndex = lastIndex;
        // A truncation that ran meanwhile shortens what the caller may believe was read (the kernel rechecks i_size too).
        long now = Volatile.Read(ref _size);
        return offset + total <= now ? total : (int)Math.Max(0, now - offset);
    }

    /// <summary>
    /// What the lockless lookup found: no page (Miss), an up-to-date page copied (Hit), or a page whose read is still
    /// in flight (Pending); the Marker forms mean this reader took the page's PG_readahead flag.
    /// </summary>
    private enum CopyResult { Miss, Hit, HitMarker, Pending, PendingMarker }

    /// <summary>
    /// Most pages one read section copies: bounds how long a remover's synchronize waits for this reader (a 256 KiB
    /// copy, about 12 us at memory speed). Long runs let the prefetches below run ahead of the copy.
    /// </summary>
    private const int MaxRunPages = 64;

    /// <summary>
    /// The hit path for a run: copies consecutive cached, up-to-date pages that carry no readahead marker, from
    /// <paramref name="position"/>, inside one RCU read section, with no reference and no lock. Returns the bytes copied.
    /// </summary>
    private int CopyCachedRun(long position, Span<byte> target)
    {
        int copied = 0;
        // Pages that lie back to back in the arena (readahead takes its batch from the buddy lists in address order)
        // are copied with one memmove. The hardware prefetchers start afresh at every 4 KiB page and need a few misses
        // to ramp up, so each page's first lines are prefetched as the run is gathered: every page's stream is under
        // way before the copy reaches it.
        byte* chunk = null;
        int chunkAt = 0;
        _pages.Rcu.RcuReadLock();
        for (int pages = 0; pages < MaxRunPages && copied < target.Length; pages++)
        {
            long at = position + copied;
            PageFrame* page = _tree.Lookup((ulong)at >> PageShift);
            if (page == null) break;
            ulong flags = Volatile.Read(ref page->FlagsAndZone);
            if ((flags & (uint)(PageFlags.Uptodate | PageFlags.Readahead)) != (uint)PageFlags.Uptodate) break;
            int inPage = (int)(at & (PageSize - 1));
            int n = Math.Min(PageSize - inPage, target.Length - copied);
            if (_pages.IsHighPage(page))
            {
                CopyChunk(chunk, target[chunkAt..copied]);
                chunk = null;
                _pages.MemcpyFromPage(target.Slice(copied, n), page, inPage);
                chunkAt = copied + n;
            }
            else
            {
                byte* source = (byte*)_pages.AddressOf(page) + inPage;
                PrefetchHead(source);
                if (chunk + (copied - chunkAt) != source)
                {
                    CopyChunk(chunk, target[chunkAt..copied]);
                    chunk = source;
                    chunkAt = copied;
                }
            }
            _pages.Lru.MarkAccessed(page, flags);
            copied += n;
        }
        CopyChunk(chunk, target[chunkAt..copied]);
        _pages.Rcu.RcuReadUnlock();
        return copied;
    }

    /// <summary>Starts loading the first four lines at <paramref name="source"/> (x86; elsewhere nothing).</summary>
    private static void PrefetchHead(byte* source)
    {
        if (!Sse.IsSupported) return;
        Sse.Prefetch0(source);
        Sse.Prefetch0(source + 64);
        Sse.Prefetch0(source + 128);
        Sse.Prefetch0(source + 192);
    }

    /// <summary>Copies a chunk of back-to-back low pages gathered by <see cref="CopyCachedRun"/> (none when <paramref name="source"/> is null).</summary>
    private static void CopyChunk(byte* source, Span<byte> target)
    {
        if (source != null) new ReadOnlySpan<byte>(source, target.Length).CopyTo(target);
    }

    /// <summary>The hit path: an up-to-date cached page copied inside an RCU read section, no reference, no lock.</summary>
    private CopyResult TryCopyCached(ulong index, int inPage, Span<byte> target)
    {
        _pages.Rcu.RcuReadLock();
        PageFrame* page = _tree.Lookup(index);
        CopyResult result = CopyResult.Miss;
        if (page != null)
        {
            ulong flags = Volatile.Read(ref page->FlagsAndZone);
            bool uptodate = (flags & (uint)PageFlags.Uptodate) != 0;
            if (uptodate)
            {
                _pages.MemcpyFromPage(target, page, inPage);
                _pages.Lru.MarkAccessed(page, flags);
            }
            bool marker = (flags & (uint)PageFlags.Readahead) != 0 && (PageWait.Clear(page, PageFlags.Readahead) & PageFlags.Readahead) != 0;
            result = uptodate
                ? marker ? CopyResult.HitMarker : CopyResult.Hit
                : marker ? CopyResult.PendingMarker : CopyResult.Pending;
        }
        _pages.Rcu.RcuReadUnlock();
        return result;
    }

    /// <summary>
    /// The slow path: the page found or read with a reference, waited on while its read is in flight. True when this
    /// reader took the page's PG_readahead marker (the caller starts the next window).
    /// </summary>
    private bool CopyFromPage(ulong index, int inPage, Span<byte> target)
    {
        PageFrame* page = GetUptodatePage(index, out _);
        try
        {
            _pages.MemcpyFromPage(target, page, inPage);
            _pages.Lru.MarkAccessed(page, Volatile.Read(ref page->FlagsAndZone));
            return page->Has(PageFlags.Readahead) && (PageWait.Clear(page, PageFlags.Readahead) & PageFlags.Readahead) != 0;
        }
        finally { PutPage(page); }
    }

    /// <summary>
    /// The page at <paramref name="index"/>, up to date, with a reference for the caller (filemap_fault's and
    /// read_cache_page's core). <paramref name="major"/> is true when this call had to read the file.
    /// </summary>
    internal PageFrame* GetUptodatePage(ulong index, out bool major)
    {
        major = false;
        while (true)
        {
            PageFrame* page = FindGetPage(index);
            if (page == null)
            {
                page = NewLockedPage(MappingGfp);
                if (!AddToPageCache(page, index))
                {
                    DiscardNewPage(page);
                    continue;
                }
            }
            else
            {
                if (page->Has(PageFlags.Uptodate)) return page;
                RunPendingRead(index);
                PageWait.Lock(page); // a read in flight holds the lock until the page is up to date
                if (!Owns(page, index))
                {
                    PageWait.Unlock(page);
                    PutPage(page);
                    continue;
                }
                if (page->Has(PageFlags.Uptodate))
                {
                    PageWait.Unlock(page);
                    return page;
                }
            }
            // Locked, in the cache, not up to date: read it here (a failed readahead left it so).
            try
            {
                ReadPagesInto(index, &page, 1);
                major = true;
            }
            catch
            {
                PageWait.Unlock(page);
                PutPage(page);
                throw;
            }
            PageWait.Unlock(page);
            return page;
        }
    }

    /// <summary>
    /// Reads <paramref name="count"/> locked, consecutive pages from <paramref name="first"/> in one vectored call,
    /// zero-filling past the end of the file, and marks them up to date. Leaves them locked.
    /// </summary>
    private void ReadPagesInto(ulong first, PageFrame** pages, int count)
    {
        IoVector vector = IoVector.Rent();
        for (int i = 0; i < count; i++) vector.Add((byte*)_pages.AddressOf(pages[i]), PageSize);
        long read = vector.ReadFrom(_file, (long)(first << PageShift));
        long expected = (long)count << PageShift;
        if (read < expected)
        {
            // Short read: the rest is a hole past the end of the file on disk (reads of it return zeros).
            for (long b = read; b < expected;)
            {
                int i = (int)(b >> PageShift);
                int from = (int)(b & (PageSize - 1));
                _pages.MemzeroPage(pages[i], from, PageSize - from);
                b += PageSize - from;
            }
        }
        for (int i = 0; i < count; i++) PageWait.Set(pages[i], PageFlags.Uptodate);
        Interlocked.Add(ref _cache.Stats.PgPgIn, (long)count * (PageSize / 1024));
    }
}
