using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Filemap;

/// <summary>
/// The page cache of one memory system (mm/filemap.c, mm/readahead.c, mm/page-writeback.c, the bdi flusher): the
/// open <see cref="FileMapping"/>s, whose pages are frames of the arena, the dirty limits that throttle writers, the
/// flusher thread that writes old dirty data back, <see cref="DropCaches"/>, and a shrinker that gives clean
/// unmapped pages back to the page allocator when it runs short.
/// </summary>
/// <remarks>
/// <para>Locks: <c>_filesLock</c> guards the table of open files only and is never held across a call into a
/// file. Each file's own locks are described on <see cref="FileMapping"/>.</para>
/// <para>Invariants: <see cref="PageCacheStatistics.FilePages"/> == sum of the open files' <see cref="FileMapping.CachedPages"/>;
/// DirtyPages == pages with PG_dirty in those trees; WritebackPages == pages with PG_writeback. All hold whenever no
/// read, write or writeback is running (<see cref="CheckConsistency"/>).</para>
/// </remarks>
public sealed unsafe class PageCache : IDisposable
{
    private readonly Lock _filesLock = new();
    private readonly Dictionary<int, FileMapping> _files = [];
    private readonly Func<ShrinkControl, long> _shrinker;
    private readonly Flusher _flusher;
    private int _nextId = 1;
    private bool _disposed;

    /// <summary>A page cache over <paramref name="pages"/>.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public PageCache(PageAllocator pages, PageCacheOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pages);
        Options = options ?? new PageCacheOptions();
        Options.Validate();
        Pages = pages;
        _shrinker = control => ShrinkCleanPages(control.NrToScan); // clean pages: no I/O, so any gfp
        pages.RegisterShrinker(_shrinker);
        _flusher = new Flusher(this);
        _lru = new PageCacheLru(this);
    }

    /// <summary>The tunables.</summary>
    public PageCacheOptions Options { get; }

    /// <summary>The page allocator cached pages come from.</summary>
    public PageAllocator Pages { get; }

    /// <summary>Counters for meminfo and vmstat.</summary>
    public PageCacheStatistics Statistics => Stats;

    internal readonly PageCacheStatistics Stats = new();

    /// <summary>
    /// Opens (or creates, with <paramref name="mode"/>) the file at <paramref name="path"/> and returns its mapping.
    /// One mapping per open; two opens of one path are two caches of the same file (use one mapping for sharing).
    /// </summary>
    /// <exception cref="IOException">The file could not be opened.</exception>
    public FileMapping Open(string path, FileMode mode = FileMode.OpenOrCreate, FileAccess access = FileAccess.ReadWrite)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        string full = System.IO.Path.GetFullPath(path);
        var handle = File.OpenHandle(full, mode, access, FileShare.ReadWrite | FileShare.Delete);
        try
        {
            lock (_filesLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                var mapping = new FileMapping(this, _nextId++, full, handle, (access & FileAccess.Write) != 0);
                _files.Add(mapping.Id, mapping);
                return mapping;
            }
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Hands the cache's pages to LRU reclaim: from here on the page allocator's reclaimer takes cold file pages (and
    /// writes dirty ones back) in LRU order, so the shrinker that dropped clean pages in file order goes. Returns the
    /// reclaimer's view of the cache.
    /// </summary>
    internal ILruOwner AttachToReclaim()
    {
        Pages.UnregisterShrinker(_shrinker);
        return _lru;
    }

    private readonly PageCacheLru _lru;

    /// <summary>The cache as LRU reclaim sees it.</summary>
    internal ILruOwner LruOwner => _lru;

    /// <summary>The open file with id <paramref name="id"/> (a cached page's mapping), or null.</summary>
    internal FileMapping? MappingOf(int id)
    {
        lock (_filesLock) return _files.GetValueOrDefault(id);
    }

    /// <summary>The open files, in no particular order.</summary>
    public IReadOnlyList<FileMapping> Files
    {
        get
        {
            lock (_filesLock) return [.. _files.Values];
        }
    }

    internal void Remove(FileMapping mapping)
    {
        lock (_filesLock) _files.Remove(mapping.Id);
    }

    /// <summary>
    /// <c>echo 1 &gt; /proc/sys/vm/drop_caches</c>: frees every clean page-cache page no one maps or holds. Dirty
    /// pages stay (run <see cref="Sync"/> first to drop them too). Returns the pages freed.
    /// </summary>
    public long DropCaches() => ShrinkCleanPages(long.MaxValue);

    /// <summary>sync(2): writes back every dirty page of every open file and waits; errors go to each file's next fsync.</summary>
    public void Sync()
    {
        foreach (FileMapping file in Files)
        {
            if (!file.TryBeginWalk()) continue;
            try { file.WritebackRange(0, ulong.MaxValue, sync: true); }
            catch (IOException) { /* recorded for the file's next fsync */ }
            finally { file.EndWalk(); }
        }
    }

    private long ShrinkCleanPages(long budget)
    {
        long freed = 0;
        foreach (FileMapping file in Files)
        {
            if (freed >= budget) break;
            if (!file.TryBeginWalk()) continue;
            try { freed += file.InvalidateCleanPages(budget - freed); }
            finally { file.EndWalk(); }
        }
        return freed;
    }

    /// <summary>A file just got its first dirty page since it was clean: start its age (__mark_inode_dirty).</summary>
    internal void NoteDirtied(FileMapping file)
    {
        if (Volatile.Read(ref file.DirtiedWhen) == 0)
            Interlocked.CompareExchange(ref file.DirtiedWhen, Math.Max(Environment.TickCount64, 1), 0);
    }

    /// <summary>Pages that may be dirty at all (global_dirtyable_memory: free plus file pages).</summary>
    private long DirtyableMemory => Pages.NrFreePages + Stats.FilePages;

    /// <summary>
    /// balance_dirty_pages after a writer dirtied pages of <paramref name="file"/>: above the background threshold the
    /// flusher starts; above the dirty limit the writer writes back its own file's pages until the system is below
    /// the limit again (the kernel sleeps the writer for a matching time; writing is the same throttle, made exact).
    /// </summary>
    internal void BalanceDirtyPages(FileMapping file)
    {
        long dirty = Stats.DirtyPages + Stats.WritebackPages;
        long dirtyable = DirtyableMemory;
        if (dirty * 100 <= dirtyable * Options.DirtyBackgroundRatio) return;
        _flusher.Wake();
        if (dirty * 100 <= dirtyable * Options.DirtyRatio) return;
        Interlocked.Increment(ref Stats.DirtyThrottled);
        try { file.WritebackRange(0, ulong.MaxValue, sync: false); }
        catch (IOException) { /* recorded for fsync */ }
    }

    /// <summary>True while dirty pages exceed the background threshold (the flusher keeps going).</summary>
    internal bool OverBackgroundThreshold
        => (Stats.DirtyPages + Stats.WritebackPages) * 100 > DirtyableMemory * Options.DirtyBackgroundRatio;

    /// <summary>Checks the invariants in the class remarks and every open file's; throws <see cref="InvalidOperationException"/>.</summary>
    public void CheckConsistency()
    {
        long pages = 0;
        foreach (FileMapping file in Files)
        {
            file.CheckConsistency();
            pages += file.CachedPages;
        }
        if (pages != Stats.FilePages)
            throw new InvalidOperationException($"page cache: files hold {pages} pages but nr_file_pages is {Stats.FilePages}.");
    }

    /// <summary>Stops the flusher, writes back and closes every open file, and unregisters the shrinker.</summary>
    public void Dispose()
    {
        lock (_filesLock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _flusher.Dispose();
        foreach (FileMapping file in Files)
        {
            try { file.Dispose(); }
            catch (InvalidOperationException) { /* still mapped: its address space owns it now */ }
        }
        Pages.UnregisterShrinker(_shrinker);
    }
}
