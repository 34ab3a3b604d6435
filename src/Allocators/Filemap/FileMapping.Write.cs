using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    /// <summary>
    /// write(2) at <paramref name="offset"/> through the cache (generic_perform_write): each page is found or created,
    /// read first when the write covers only part of it and it holds file data, copied into, marked up to date and
    /// dirty; a write past the end extends the file. The data reaches the disk at writeback (the flusher, the dirty
    /// limits, <see cref="Fsync"/>). Writes to one file are serialized (i_rwsem); reads run beside them.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is negative.</exception>
    /// <exception cref="NotSupportedException">The file was opened read-only.</exception>
    /// <exception cref="IOException">Reading the rest of a partially written page failed; the pages before it are written.</exception>
    /// <exception cref="OutOfMemoryException">No page for the cache; the pages before it are written.</exception>
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ThrowIfDisposed();
        if (!_writable) throw new NotSupportedException($"page cache: {Path} was opened read-only.");
        if (data.IsEmpty) return;
        if (offset > long.MaxValue - data.Length) throw new ArgumentOutOfRangeException(nameof(offset), $"write at {offset} of {data.Length} bytes overflows the file size.");
        int dirtied = 0;
        lock (_inodeLock)
        {
            ThrowIfDisposed();
            int done = 0;
            while (done < data.Length)
            {
                long position = offset + done;
                ulong index = (ulong)position >> PageShift;
                int inPage = (int)(position & (PageSize - 1));
                int n = Math.Min(PageSize - inPage, data.Length - done);
                PageFrame* page = FindOrCreateLocked(index, MappingGfp);
                try
                {
                    if (!page->Has(PageFlags.Uptodate)) PrepareWrite(page, index, inPage, n);
                    _pages.MemcpyToPage(page, inPage, data.Slice(done, n));
                    PageWait.Set(page, PageFlags.Uptodate);
                    bool wasDirty = page->Has(PageFlags.Dirty);
                    SetPageDirty(page);
                    if (!wasDirty) dirtied++;
                    // write_end: i_size grows while the page is locked, so a reader that sees the size sees the data.
                    long end = position + n;
                    if (end > Volatile.Read(ref _size)) Volatile.Write(ref _size, end);
                }
                finally
                {
                    PageWait.Unlock(page);
                    PutPage(page);
                }
                done += n;
            }
        }
        if (dirtied > 0) _cache.BalanceDirtyPages(this);
    }

    /// <summary>write_begin for a page that is not up to date: read what the write leaves of it, or zero it past end of file.</summary>
    private void PrepareWrite(PageFrame* page, ulong index, int inPage, int length)
    {
        if (inPage == 0 && length == PageSize) return; // overwritten whole
        if ((long)(index << PageShift) >= Volatile.Read(ref _size))
        {
            _pages.MemzeroPage(page, 0, PageSize);
            return;
        }
        ReadPagesInto(index, &page, 1);
    }
}
