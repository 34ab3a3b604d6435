namespace Allocators.Filemap;

/// <summary>
/// The flusher thread of the page cache's one backing device (wb_workfn for the bdi): wakes every
/// <see cref="PageCacheOptions.DirtyWritebackInterval"/>, or at once when <see cref="PageCache.BalanceDirtyPages"/>
/// finds dirty pages over the background threshold, and writes back each file dirty for longer than
/// <see cref="PageCacheOptions.DirtyExpire"/> — every dirty file while over the threshold. Errors are recorded for
/// each file's next fsync.
/// </summary>
internal sealed class Flusher : IDisposable
{
    private readonly PageCache _cache;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private volatile bool _stop;

    public Flusher(PageCache cache)
    {
        _cache = cache;
        _thread = new Thread(Run) { IsBackground = true, Name = "flush-allocators" };
        _thread.Start();
    }

    /// <summary>Wakes the flusher now (wb_wakeup).</summary>
    public void Wake() => _wake.Set();

    private void Run()
    {
        while (!_stop)
        {
            TimeSpan interval = _cache.Options.DirtyWritebackInterval;
            _wake.WaitOne(interval == TimeSpan.Zero ? Timeout.InfiniteTimeSpan : interval);
            if (_stop) return;
            WritebackOld();
        }
    }

    /// <summary>wb_writeback: files dirty for longer than the expiry; every dirty file while over the background threshold.</summary>
    private void WritebackOld()
    {
        long expireMs = (long)_cache.Options.DirtyExpire.TotalMilliseconds;
        foreach (FileMapping file in _cache.Files)
        {
            if (_stop) return;
            long since = Volatile.Read(ref file.DirtiedWhen);
            if (since == 0) continue;
            bool expired = Environment.TickCount64 - since >= expireMs;
            if (!expired && !_cache.OverBackgroundThreshold) continue;
            if (!file.TryBeginWalk()) continue;
            try
            {
                // Clean from now on unless a page is dirtied meanwhile (which restarts the age).
                Interlocked.Exchange(ref file.DirtiedWhen, 0);
                try
                {
                    file.WritebackRange(0, ulong.MaxValue, sync: false);
                }
                catch (IOException) { /* recorded for the file's next fsync */ }
                if (file.IsDirty) _cache.NoteDirtied(file); // skipped pages (locked, in flight) keep the file dirty
            }
            finally { file.EndWalk(); }
        }
    }

    public void Dispose()
    {
        _stop = true;
        _wake.Set();
        _thread.Join();
        _wake.Dispose();
    }
}
