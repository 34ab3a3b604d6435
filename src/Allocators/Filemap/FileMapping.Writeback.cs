using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    // errseq_t: each writeback error bumps the sequence; fsync reports an error whose sequence it has not reported.
    private readonly Lock _errorLock = new();
    private Exception? _writeError;
    private long _errorSeq;
    private long _errorSeqReported;

    /// <summary>When the file first became dirty since it was last clean (inode->dirtied_when), as Environment.TickCount64; 0 when clean.</summary>
    internal long DirtiedWhen;

    /// <summary>
    /// fsync(2): writes every dirty page back, waits for all writeback of the file, flushes the file to the device and
    /// reports a writeback error that happened since the last report (errseq), even one the flusher met.
    /// </summary>
    /// <exception cref="IOException">A write-back failed; the pages it could not write stay dirty.</exception>
    public void Fsync() => Sync();

    /// <summary>fdatasync(2): as <see cref="Fsync"/> (the file's length is data here, so both flush it).</summary>
    /// <exception cref="IOException">A write-back failed; the pages it could not write stay dirty.</exception>
    public void Fdatasync() => Sync();

    private void Sync()
    {
        ThrowIfDisposed();
        if (_writable)
        {
            try
            {
                WritebackRange(0, ulong.MaxValue, sync: true);
                SyncLength();
                RandomAccess.FlushToDisk(_file);
            }
            catch (IOException e) when (e is not WritebackFailedException)
            {
                RecordError(e); // the flush or the length; a failed page write was recorded where it failed
            }
            catch (WritebackFailedException) { }
        }
        ReportError();
    }

    /// <summary>msync(MS_SYNC) and sync_file_range: writes and waits for the dirty pages of [first, end) (page indices).</summary>
    internal void SyncRange(ulong first, ulong end)
    {
        ThrowIfDisposed();
        try
        {
            WritebackRange(first, end, sync: true);
            SyncLength();
        }
        catch (IOException e) when (e is not WritebackFailedException)
        {
            RecordError(e);
        }
        catch (WritebackFailedException) { }
        ReportError();
    }

    /// <summary>A page write that failed, already recorded for fsync (so callers that report do not count it twice).</summary>
    private sealed class WritebackFailedException(string message, Exception inner) : IOException(message, inner);

    /// <summary>Makes the file on disk as long as i_size (the metadata half of writeback).</summary>
    private void SyncLength()
    {
        _sizeLock.EnterReadLock();
        try
        {
            long size = Volatile.Read(ref _size);
            if (RandomAccess.GetLength(_file) != size) RandomAccess.SetLength(_file, size);
        }
        finally { _sizeLock.ExitReadLock(); }
    }

    private void RecordError(Exception error)
    {
        lock (_errorLock)
        {
            _writeError = error;
            _errorSeq++;
        }
        Interlocked.Increment(ref _cache.Stats.WritebackErrors);
    }

    private void ReportError()
    {
        Exception? error = null;
        lock (_errorLock)
        {
            if (_errorSeq != _errorSeqReported)
            {
                _errorSeqReported = _errorSeq;
                error = _writeError;
            }
        }
        if (error != null) throw new IOException($"page cache: writeback of {Path} failed: {error.Message}", error);
    }

    /// <summary>
    /// write_cache_pages over page indices [<paramref name="first"/>, <paramref name="end"/>): each dirty page is locked,
    /// cleaned in the page tables (page_mkclean) and in its flags, marked for writeback, and written with its
    /// neighbours in one vectored call. <paramref name="sync"/> (WB_SYNC_ALL) waits for locked pages and for writeback
    /// already in flight; background writeback skips them. Returns the pages written. A failed write leaves its pages
    /// dirty and records the error for <see cref="Fsync"/>; it is also thrown.
    /// </summary>
    internal long WritebackRange(ulong first, ulong end, bool sync)
    {
        long written = 0;
        Span<ulong> indices = stackalloc ulong[GangBatch];
        PageFrame** found = stackalloc PageFrame*[GangBatch];
        PageFrame** run = stackalloc PageFrame*[GangBatch];
        ulong next = first;
        IOException? failure = null;
        while (next < end)
        {
            int n = FindGetPages(next, end, PageTree.TagDirty, indices, found);
            if (n == 0) break;
            next = indices[n - 1] + 1;
            int runCount = 0;
            ulong runFirst = 0;
            for (int i = 0; i < n; i++)
            {
                PageFrame* page = found[i];
                if (!ClearDirtyForIo(page, indices[i], sync))
                {
                    PutPage(page);
                    continue;
                }
                if (runCount > 0 && indices[i] != runFirst + (ulong)runCount)
                {
                    written += WriteRun(runFirst, run, runCount, ref failure);
                    runCount = 0;
                }
                if (runCount == 0) runFirst = indices[i];
                run[runCount++] = page;
            }
            if (runCount > 0) written += WriteRun(runFirst, run, runCount, ref failure);
        }
        if (sync) WaitOnWriteback(first, end);
        if (failure != null)
        {
            RecordError(failure);
            throw new WritebackFailedException($"page cache: writeback of {Path} failed: {failure.Message}", failure);
        }
        return written;
    }

    /// <summary>
    /// clear_page_dirty_for_io under the page lock: false (nothing to write) when the page left the cache, is clean,
    /// or — in background writeback — is locked or under writeback already. On true the page is clean, write-protected
    /// in every mapping, flagged PG_writeback, unlocked, and still referenced by the caller.
    /// </summary>
    private bool ClearDirtyForIo(PageFrame* page, ulong index, bool sync)
    {
        if (sync) PageWait.Lock(page);
        else if (!PageWait.TryLock(page)) return false;
        if (!Owns(page, index))
        {
            PageWait.Unlock(page);
            return false;
        }
        if (page->Has(PageFlags.Writeback))
        {
            if (!sync)
            {
                PageWait.Unlock(page);
                return false;
            }
            PageWait.WaitWhile(page, PageFlags.Writeback);
        }
        MkClean(page, index); // the PTEs' dirty bits were folded into PG_dirty by the MMU when it set them
        if ((PageWait.Clear(page, PageFlags.Dirty) & PageFlags.Dirty) == 0)
        {
            PageWait.Unlock(page);
            return false;
        }
        SetWriteback(page, index);
        PageWait.Unlock(page);
        return true;
    }

    /// <summary>set_page_writeback for a locked page whose PG_dirty the caller just cleared: the bit, the tags, the counts.</summary>
    private void SetWriteback(PageFrame* page, ulong index)
    {
        PageWait.Set(page, PageFlags.Writeback);
        lock (_treeLock)
        {
            _tree.ClearTag(index, PageTree.TagDirty);
            _tree.SetTag(index, PageTree.TagWriteback);
        }
        Interlocked.Decrement(ref _cache.Stats.NrDirty);
        Interlocked.Increment(ref _cache.Stats.NrWriteback);
    }

    /// <summary>Writes a run of pages under writeback (clamped to i_size), ends their writeback and drops the caller's references.</summary>
    private long WriteRun(ulong firstIndex, PageFrame** pages, int count, ref IOException? failure)
    {
        _sizeLock.EnterReadLock();
        try { return WriteRunLocked(firstIndex, pages, count, ref failure); }
        finally { _sizeLock.ExitReadLock(); }
    }

    /// <summary><see cref="WriteRun"/> with the size lock held for reading.</summary>
    private long WriteRunLocked(ulong firstIndex, PageFrame** pages, int count, ref IOException? failure)
    {
        bool ok = failure == null;
        if (ok)
        {
            try
            {
                long size = Volatile.Read(ref _size);
                long offset = (long)(firstIndex << PageShift);
                IoVector vector = IoVector.Rent();
                for (int i = 0; i < count; i++)
                {
                    long pageStart = offset + ((long)i << PageShift);
                    if (pageStart >= size) break; // truncated meanwhile: nothing of it belongs to the file
                    vector.Add((byte*)_pages.AddressOf(pages[i]), (int)Math.Min(PageSize, size - pageStart));
                }
                if (vector.Count > 0) vector.WriteTo(_file, offset);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                failure = e as IOException ?? new IOException(e.Message, e);
                ok = false;
            }
        }
        for (int i = 0; i < count; i++)
        {
            PageFrame* page = pages[i];
            if (!ok) SetPageDirty(page); // the data is not lost: the next fsync tries again (redirty_page_for_writepage)
            EndWriteback(page, firstIndex + (ulong)i);
            PutPage(page);
        }
        if (ok) Interlocked.Add(ref _cache.Stats.PgPgOut, (long)count * (PageSize / 1024));
        return ok ? count : 0;
    }

    /// <summary>end_page_writeback: the writeback tag and bit cleared, sleepers woken.</summary>
    private void EndWriteback(PageFrame* page, ulong index)
    {
        lock (_treeLock)
        {
            if (page->Private == (nuint)Id) _tree.ClearTag(index, PageTree.TagWriteback);
        }
        Interlocked.Decrement(ref _cache.Stats.NrWriteback);
        PageWait.ClearAndWake(page, PageFlags.Writeback);
    }

    /// <summary>filemap_fdatawait_range: sleeps until no page of [first, end) is under writeback.</summary>
    private void WaitOnWriteback(ulong first, ulong end)
    {
        Span<ulong> indices = stackalloc ulong[GangBatch];
        PageFrame** found = stackalloc PageFrame*[GangBatch];
        ulong next = first;
        while (next < end)
        {
            int n = FindGetPages(next, end, PageTree.TagWriteback, indices, found);
            if (n == 0) return;
            next = indices[n - 1] + 1;
            for (int i = 0; i < n; i++)
            {
                PageWait.WaitWhile(found[i], PageFlags.Writeback);
                PutPage(found[i]);
            }
        }
    }

    /// <summary>True when some page of the file is dirty.</summary>
    internal bool IsDirty
    {
        get
        {
            lock (_treeLock) return _tree.AnyTagged(PageTree.TagDirty);
        }
    }
}
