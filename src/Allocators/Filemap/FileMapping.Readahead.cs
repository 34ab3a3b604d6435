using System.Numerics;
using Allocators.Physical;

namespace Allocators.Filemap;

public sealed unsafe partial class FileMapping
{
    /// <summary>file_ra_state: the current window [Start, Start + Size), of which the last AsyncSize pages start with the marker page.</summary>
    private struct RaState
    {
        public ulong Start;
        public int Size;
        public int AsyncSize;
        public ulong PrevIndex;
    }

    private readonly Lock _raLock = new();
    private RaState _ra = new() { PrevIndex = ulong.MaxValue };
    private readonly List<ReadBatch> _pendingReads = []; // queued asynchronous reads, under _raLock

    /// <summary>
    /// A reader that needs page <paramref name="index"/> while an asynchronous readahead of it still waits in the
    /// thread pool runs that read itself, so a saturated pool never leaves a reader sleeping on a page no thread reads.
    /// </summary>
    private void RunPendingRead(ulong index)
    {
        ReadBatch? batch = null;
        lock (_raLock)
        {
            foreach (ReadBatch pending in _pendingReads)
            {
                if (pending.Covers(index))
                {
                    batch = pending;
                    break;
                }
            }
        }
        batch?.Execute();
    }

    // Async readahead batches queued or running: each drops its page references after the pages leave its hands, so
    // Dispose waits for them before the page allocator may go away.
    private int _asyncReads;

    /// <summary>Waits until no async readahead batch of this file is queued or running.</summary>
    private void WaitForAsyncReads()
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref _asyncReads) != 0) spin.SpinOnce(sleep1Threshold: 20);
    }

    /// <summary>The readahead window now (start page, pages, async tail) — for tests and diagnostics.</summary>
    internal (ulong Start, int Size, int AsyncSize) ReadaheadWindow
    {
        get
        {
            lock (_raLock) return (_ra.Start, _ra.Size, _ra.AsyncSize);
        }
    }

    /// <summary>
    /// page_cache_sync_ra on a miss at <paramref name="index"/> for a request of <paramref name="requested"/> pages:
    /// a miss just past the window pushes it forward, ramped up (the reader outran an unmarked window); another
    /// sequential miss (first page, or right after the previous read) starts a new window sized from the request;
    /// a random miss reads just the request and leaves the window alone.
    /// </summary>
    private void SyncReadahead(ulong index, int requested)
    {
        int max = MaxWindow(requested);
        if (max == 0)
        {
            ReadWindow(index, 1, marker: ulong.MaxValue, aheadFrom: ulong.MaxValue, async: false);
            return;
        }
        ulong start;
        int size;
        ulong marker;
        lock (_raLock)
        {
            bool sequential = index == 0 || index == _ra.PrevIndex || index == _ra.PrevIndex + 1
                || (index >= _ra.Start && index < _ra.Start + (ulong)_ra.Size);
            if (index != 0 && _ra.Size > 0 && index == _ra.Start + (ulong)_ra.Size)
            {
                _ra.Start = index;
                _ra.Size = NextWindow(_ra.Size, max);
                _ra.AsyncSize = _ra.Size;
                start = _ra.Start;
                size = _ra.Size;
                marker = start;
            }
            else if (!sequential)
            {
                start = index;
                size = Math.Min(requested, max);
                marker = ulong.MaxValue;
            }
            else
            {
                _ra.Start = index;
                _ra.Size = InitialWindow(requested, max);
                _ra.AsyncSize = _ra.Size > requested ? _ra.Size - requested : _ra.Size;
                start = _ra.Start;
                size = _ra.Size;
                marker = _ra.Start + (ulong)(_ra.Size - _ra.AsyncSize);
            }
        }
        ReadWindow(start, size, marker, aheadFrom: index + (ulong)requested, async: false);
    }

    /// <summary>
    /// page_cache_async_ra: a read reached the marker page of the window, so the next window (ramped up) is read
    /// in the background while the reader goes on with the pages it has.
    /// </summary>
    private void AsyncReadahead(ulong index, int requested)
    {
        int max = MaxWindow(requested);
        if (max == 0) return;
        ulong start;
        int size;
        lock (_raLock)
        {
            if (index == _ra.Start + (ulong)(_ra.Size - _ra.AsyncSize))
            {
                _ra.Start += (ulong)_ra.Size;
                _ra.Size = NextWindow(_ra.Size, max);
            }
            else
            {
                // A marker of an older window (interleaved readers): start over from here.
                _ra.Start = index + 1;
                _ra.Size = NextWindow(Math.Max(requested, 1), max);
            }
            _ra.AsyncSize = _ra.Size;
            start = _ra.Start;
            size = _ra.Size;
        }
        ReadWindow(start, size, marker: start, aheadFrom: start, async: true);
    }

    /// <summary>
    /// The window limit for a request of <paramref name="requested"/> pages: ra_pages, or for a larger request up to
    /// the device's largest I/O (ondemand_readahead's bdi->io_pages rule), so one big read is one big window.
    /// </summary>
    private int MaxWindow(int requested)
    {
        int max = _cache.Options.ReadaheadPages;
        return max > 0 && requested > max ? Math.Min(requested, Math.Max(max, IoVector.MaxPages)) : max;
    }

    /// <summary>get_init_ra_size: 4x small requests, 2x medium ones, the maximum for large.</summary>
    internal static int InitialWindow(int requested, int max)
    {
        int size = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(requested, 1));
        if (size <= max / 32) size *= 4;
        else if (size <= max / 4) size *= 2;
        else size = max;
        return Math.Min(size, max);
    }

    /// <summary>get_next_ra_size: 4x while small, then 2x, capped at the maximum.</summary>
    internal static int NextWindow(int current, int max)
    {
        if (current < max / 16) return current * 4;
        if (current <= max / 2) return current * 2;
        return max;
    }

    /// <summary>
    /// page_cache_ra_unbounded: allocates, locks and inserts every missing page of [<paramref name="start"/>,
    /// <paramref name="start"/> + <paramref name="count"/>) below end of file, flags <paramref name="marker"/> with
    /// PG_readahead, and reads each run of new pages in one vectored call — now, or on a pool thread when
    /// <paramref name="async"/>. A page already cached ends a run. New pages from <paramref name="aheadFrom"/> on
    /// are the ones read ahead of the request (the statistic).
    /// </summary>
    private void ReadWindow(ulong start, int count, ulong marker, ulong aheadFrom, bool async)
    {
        ulong end = start + (ulong)count;
        ulong eof = (ulong)((Volatile.Read(ref _size) + PageSize - 1) >> PageShift);
        if (end > eof) end = eof;
        if (start >= end) return;
        var batch = new ReadBatch(this, (int)(end - start));
        long ahead = 0;
        try
        {
            for (ulong index = start; index < end; index++)
            {
                if (FindPresent(index))
                {
                    batch.Submit(async);
                    batch = new ReadBatch(this, (int)(end - start));
                    continue;
                }
                PageFrame* page;
                try { page = NewLockedPage(MappingGfp); }
                catch (OutOfMemoryException) { break; } // readahead is a hint: stop, the reader's own page comes later
                if (!AddToPageCache(page, index))
                {
                    DiscardNewPage(page);
                    batch.Submit(async);
                    batch = new ReadBatch(this, (int)(end - start));
                    continue;
                }
                if (index == marker) PageWait.Set(page, PageFlags.Readahead);
                if (index >= aheadFrom) ahead++;
                if (!batch.Add(index, page))
                {
                    batch.Submit(async);
                    batch = new ReadBatch(this, (int)(end - start));
                    batch.Add(index, page);
                }
            }
        }
        finally { batch.Submit(async); }
        if (ahead > 0) Interlocked.Add(ref _cache.Stats.ReadaheadPages, ahead);
    }

    private bool FindPresent(ulong index)
    {
        _pages.Rcu.RcuReadLock();
        bool present = _tree.Lookup(index) != null;
        _pages.Rcu.RcuReadUnlock();
        return present;
    }

    /// <summary>One run of consecutive new, locked pages, each holding the reference its allocation gave; read as one I/O.</summary>
    private sealed class ReadBatch(FileMapping owner, int capacity) : IThreadPoolWorkItem
    {
        private readonly nint[] _pages = new nint[Math.Min(capacity, IoVector.MaxPages)];
        private ulong _first;
        private int _count;
        private int _claimed;

        /// <summary>True when the batch holds page <paramref name="index"/>.</summary>
        public bool Covers(ulong index) => index >= _first && index < _first + (ulong)_count;
        private bool _async;

        public bool Add(ulong index, PageFrame* page)
        {
            if (_count == _pages.Length || (_count > 0 && index != _first + (ulong)_count)) return false;
            if (_count == 0) _first = index;
            _pages[_count++] = (nint)page;
            return true;
        }

        public void Submit(bool async)
        {
            if (_count == 0) return;
            if (!async)
            {
                Execute();
                return;
            }
            _async = true;
            Interlocked.Increment(ref owner._asyncReads);
            lock (owner._raLock) owner._pendingReads.Add(this);
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }

        /// <summary>Reads the batch, once: whichever of the pool thread and a waiting reader comes first.</summary>
        public void Execute()
        {
            if (Interlocked.Exchange(ref _claimed, 1) != 0) return;
            lock (owner._raLock) owner._pendingReads.Remove(this);
            int count = _count;
            try
            {
                fixed (nint* pages = _pages) owner.ReadPagesInto(_first, (PageFrame**)pages, count);
            }
            catch (Exception) when (count > 0)
            {
                // Readahead failures are not reported: the pages stay not up to date and the reader that needs one
                // reads it itself and gets the error.
            }
            for (int i = 0; i < count; i++)
            {
                var page = (PageFrame*)_pages[i];
                PageWait.Unlock(page);
                owner.PutPage(page);
            }
            if (_async) Interlocked.Decrement(ref owner._asyncReads);
        }
    }
}
