using System.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Physical;
using System.Runtime.InteropServices;
using Allocators.Native;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Filemap;

/// <summary>
/// One open file and its cached pages: the kernel's inode and <c>struct address_space</c> over a real file on disk
/// (<see cref="SafeFileHandle"/> + <see cref="RandomAccess"/>). <see cref="Read"/> and <see cref="Write"/> go through
/// the cache with readahead; address spaces map it (<c>AddressSpace.Mmap</c> with a file); dirty pages go back to the
/// file through the flusher, the dirty limits, <see cref="Fsync"/> and <see cref="Truncate"/>.
/// </summary>
/// <remarks>
/// <para>Pages are frames of the arena indexed by page offset in a native radix tree; each cached page carries
/// <c>Private</c> = this mapping's id and <c>Data0</c> = its index (page-&gt;mapping, page-&gt;index) while it is in
/// the tree, and holds one reference for the cache plus one per PTE and per transient user.</para>
/// <para>Locks, outermost first: <c>_inodeLock</c> (i_rwsem: writes, truncation) → page lock (<see cref="PageWait"/>)
/// → <c>_treeLock</c> (the xarray lock: tree and tag changes). <c>_sizeLock</c> (held for reading around writeback
/// I/O, for writing while truncation changes the file's length) nests inside the page lock. Lookups take none of
/// them: they run inside an RCU read section (<c>PageAllocator.Rcu</c>), and a page leaves the tree only with its page
/// lock held, then a grace period passes before the cache's reference is dropped.</para>
/// <para>Invariants (checked by <see cref="CheckConsistency"/>): pages in the tree == <see cref="CachedPages"/>; every
/// page in the tree has Private == id, Data0 == its index and a reference count &gt;= 1; the dirty tag is set exactly
/// on pages with PG_dirty; no page lies at or beyond ceil(<see cref="Length"/> / 4096) once no write or truncation
/// is running.</para>
/// </remarks>
public sealed unsafe partial class FileMapping : IDisposable
{
    private readonly PageCache _cache;
    private readonly PageAllocator _pages;
    private readonly SafeFileHandle _file;
    private readonly PageTree _tree = new();
    private readonly Lock _treeLock = new();
    private readonly Lock _inodeLock = new();
    private readonly ReaderWriterLockSlim _sizeLock = new();
    private readonly bool _writable;
    private long _size;
    private long _nrPages;
    private int _disposed;

    internal FileMapping(PageCache cache, int id, string path, SafeFileHandle file, bool writable)
    {
        _cache = cache;
        _pages = cache.Pages;
        Id = id;
        Path = path;
        _file = file;
        _writable = writable;
        _size = RandomAccess.GetLength(file);
        (Device, Inode) = Identify(file, id);
    }

    /// <summary>
    /// The file's device (major:minor as maps prints it) and inode number from fstat on x86-64 Linux; elsewhere
    /// 00:00 and the mapping's <see cref="Id"/>.
    /// </summary>
    private static (string Device, ulong Inode) Identify(SafeFileHandle file, int id)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return ("00:00", (ulong)id);
        byte* stat = stackalloc byte[256];
        bool added = false;
        file.DangerousAddRef(ref added);
        try
        {
            if (Libc.Fstat((int)file.DangerousGetHandle(), stat) != 0) return ("00:00", (ulong)id);
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
        ulong dev = *(ulong*)stat;
        // glibc's gnu_dev_major/minor: the bits are split across the 64-bit value.
        ulong major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfffUL);
        ulong minor = (dev & 0xff) | ((dev >> 12) & ~0xffUL);
        return ($"{major:x2}:{minor:x2}", *(ulong*)(stat + 8));
    }

    /// <summary>The file's device as /proc/pid/maps prints it (<c>major:minor</c> in hex).</summary>
    public string Device { get; }

    /// <summary>The file's inode number on its file system (st_ino).</summary>
    public ulong Inode { get; }

    /// <summary>This mapping's number in its page cache (what a cached page's Private word holds; the inode number in maps).</summary>
    public int Id { get; }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>The file size the cache knows (i_size): the file on disk catches up at writeback.</summary>
    public long Length => Volatile.Read(ref _size);

    /// <summary>Pages of this file in the cache (nrpages).</summary>
    public long CachedPages => Volatile.Read(ref _nrPages);

    /// <summary>The page cache this file belongs to.</summary>
    public PageCache Cache => _cache;

    internal PageAllocator Pages => _pages;

    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    // Walkers that reach the file through the cache's list of open files (the flusher, sync, drop_caches, the
    // shrinker) rather than through their own reference: Dispose waits for them before it frees the tree.
    private int _walkers;

    /// <summary>
    /// Enters the file for a walk of the open files; false when it is closing (skip it). Pair a true result with
    /// <see cref="EndWalk"/>.
    /// </summary>
    internal bool TryBeginWalk()
    {
        Interlocked.Increment(ref _walkers);
        // Dekker with Dispose: it sets _disposed then reads _walkers, both with full fences, so either it waits for
        // this walker or this walker sees it closing.
        if (Volatile.Read(ref _disposed) == 0) return true;
        EndWalk();
        return false;
    }

    /// <summary>Leaves a walk <see cref="TryBeginWalk"/> entered.</summary>
    internal void EndWalk() => Interlocked.Decrement(ref _walkers);

    /// <summary>True when the file was opened for writing.</summary>
    public bool CanWrite => _writable;

    /// <summary>
    /// find_get_page: the cached page at <paramref name="index"/> with a reference for the caller (release it with
    /// <see cref="PutPage"/>), or null. Lockless.
    /// </summary>
    internal PageFrame* FindGetPage(ulong index)
    {
        _pages.Rcu.RcuReadLock();
        PageFrame* page = _tree.Lookup(index);
        // The cache's reference keeps the count above zero until a grace period ends, so a plain increment is safe here.
        if (page != null) Interlocked.Increment(ref page->_refcount);
        _pages.Rcu.RcuReadUnlock();
        return page;
    }

    /// <summary>Pages one gang lookup returns (the kernel's folio_batch): the stack buffers of every tree walk.</summary>
    private const int GangBatch = 64;

    /// <summary>
    /// find_get_pages_range(_tag): up to <paramref name="indices"/>.Length pages of [<paramref name="start"/>,
    /// <paramref name="end"/>) in index order (only those carrying <paramref name="tag"/> when it is &gt;= 0), each with
    /// a reference for the caller, taken under the tree lock while the cache's own keeps the count above zero.
    /// </summary>
    internal int FindGetPages(ulong start, ulong end, int tag, Span<ulong> indices, PageFrame** found)
    {
        lock (_treeLock)
        {
            int n = _tree.Gang(start, end, tag, indices, found);
            for (int i = 0; i < n; i++) Interlocked.Increment(ref found[i]->_refcount);
            return n;
        }
    }

    /// <summary>Drops a reference taken by a lookup of this mapping; the last one frees the page.</summary>
    internal void PutPage(PageFrame* page) => _pages.PutPage(page);

    /// <summary>True while <paramref name="page"/> is the page cached at <paramref name="index"/> here (page->mapping check after lock_page).</summary>
    internal bool Owns(PageFrame* page, ulong index) => page->Private == (nuint)Id && page->Data0 == index && _tree.Lookup(index) == page;

    /// <summary>
    /// find_or_create_page: the page at <paramref name="index"/>, locked and referenced, created (not up to date)
    /// and added to the cache when missing (add_to_page_cache_lru). Throws <see cref="OutOfMemoryException"/>.
    /// </summary>
    internal PageFrame* FindOrCreateLocked(ulong index, Gfp gfp)
    {
        while (true)
        {
            PageFrame* page = FindGetPage(index);
            if (page == null)
            {
                page = NewLockedPage(gfp);
                if (AddToPageCache(page, index)) return page;
                DiscardNewPage(page);
                continue;
            }
            PageWait.Lock(page);
            if (Owns(page, index)) return page;
            // Truncated or dropped while we slept on the lock: look again.
            PageWait.Unlock(page);
            PutPage(page);
        }
    }

    /// <summary>A new locked page for the cache with the mapping's gfp mask (GFP_HIGHUSER_MOVABLE), one reference (the caller's).</summary>
    internal PageFrame* NewLockedPage(Gfp gfp)
    {
        PageFrame* page = _pages.AllocPages(gfp | Gfp.NoWarn, 0);
        if (page == null) throw new OutOfMemoryException($"page cache: no page for {Path} (arena exhausted).");
        PageWait.Set(page, PageFlags.Locked);
        return page;
    }

    /// <summary>Frees a page <see cref="NewLockedPage"/> made that never entered the cache.</summary>
    internal void DiscardNewPage(PageFrame* page)
    {
        PageWait.Clear(page, PageFlags.Locked | PageFlags.Uptodate | PageFlags.Readahead);
        _pages.FreePages(page, 0);
    }

    /// <summary>
    /// add_to_page_cache: inserts a locked page at <paramref name="index"/> and gives the cache a reference (the caller
    /// keeps its own). False when another page got there first.
    /// </summary>
    internal bool AddToPageCache(PageFrame* page, ulong index)
    {
        page->Private = (nuint)Id;
        page->Data0 = index;
        ulong shadow;
        lock (_treeLock)
        {
            if (!_tree.Insert(index, (ulong)page, out shadow))
            {
                page->Private = 0;
                return false;
            }
            Interlocked.Increment(ref page->_refcount);
            _nrPages++;
        }
        Interlocked.Increment(ref _cache.Stats.NrFilePages);
        // folio_add_lru: the inactive file list, or the active one when the page's shadow says it was evicted too soon.
        _pages.Lru.Add(page, _pages.NodeOf(page), active: shadow != 0 && Workingset.Refault(_pages, shadow, anon: false));
        return true;
    }

    /// <summary>
    /// __delete_from_page_cache for a locked page still owned here: out of the tree, dirty accounting undone, page->mapping
    /// cleared. The cache's reference is the caller's to drop after <see cref="SynchronizeLookups"/>.
    /// </summary>
    internal void DeleteFromPageCache(PageFrame* page, ulong index, ulong shadow = 0)
    {
        Debug.Assert(page->Has(PageFlags.Locked) && !page->Has(PageFlags.Writeback));
        lock (_treeLock)
        {
            PageFrame* removed = _tree.Delete(index);
            Debug.Assert(removed == page);
            // The leaf node is still there, so storing the shadow allocates nothing.
            if (shadow != 0) _tree.Insert(index, shadow, out _);
            _nrPages--;
        }
        if ((PageWait.Clear(page, PageFlags.Dirty | PageFlags.Readahead) & PageFlags.Dirty) != 0)
            Interlocked.Decrement(ref _cache.Stats.NrDirty);
        page->Private = 0;
        Interlocked.Decrement(ref _cache.Stats.NrFilePages);
    }

    /// <summary>Waits until no lookup that may have seen a deleted page is still running (synchronize_rcu).</summary>
    internal void SynchronizeLookups() => _pages.Rcu.SynchronizeRcu();

    /// <summary>
    /// set_page_dirty: marks a locked or mapped page of this file dirty and tags it for writeback. The PTE side (the
    /// dirty bit) is the MMU's.
    /// </summary>
    internal void SetPageDirty(PageFrame* page)
    {
        if ((PageWait.Set(page, PageFlags.Dirty) & PageFlags.Dirty) != 0) return;
        bool tagged = false;
        lock (_treeLock)
        {
            ulong index = page->Data0;
            if (page->Private == (nuint)Id && _tree.Lookup(index) == page)
            {
                _tree.SetTag(index, PageTree.TagDirty);
                tagged = true;
            }
        }
        if (!tagged)
        {
            // Truncated meanwhile: nothing will write it, so it is not dirty.
            PageWait.Clear(page, PageFlags.Dirty);
            return;
        }
        Interlocked.Increment(ref _cache.Stats.NrDirty);
        _cache.NoteDirtied(this);
    }

    /// <summary>Checks the invariants in the class remarks; throws <see cref="InvalidOperationException"/> naming the first broken one.</summary>
    public void CheckConsistency()
    {
        lock (_treeLock)
        {
            _tree.AssertTagsConsistent();
            Span<ulong> indices = stackalloc ulong[GangBatch];
            PageFrame** pages = stackalloc PageFrame*[GangBatch];
            long count = 0;
            ulong start = 0;
            while (true)
            {
                int n = _tree.Gang(start, ulong.MaxValue, -1, indices, pages);
                for (int i = 0; i < n; i++)
                {
                    PageFrame* page = pages[i];
                    if (page->Private != (nuint)Id || page->Data0 != indices[i])
                        throw new InvalidOperationException($"page cache {Path}: page pfn 0x{page->Pfn:x} at index {indices[i]} says mapping {page->Private} index {page->Data0}.");
                    if (page->RefCount < 1)
                        throw new InvalidOperationException($"page cache {Path}: page pfn 0x{page->Pfn:x} at index {indices[i]} has refcount {page->RefCount}.");
                    if (page->Has(PageFlags.Dirty) != _tree.GetTag(indices[i], PageTree.TagDirty))
                        throw new InvalidOperationException($"page cache {Path}: page at index {indices[i]} PG_dirty={page->Has(PageFlags.Dirty)} but its dirty tag differs.");
                }
                count += n;
                if (n < GangBatch) break;
                start = indices[n - 1] + 1;
            }
            if (count != _nrPages)
                throw new InvalidOperationException($"page cache {Path}: {count} pages in the tree but nrpages is {_nrPages}.");
        }
    }

    /// <summary>
    /// Writes every dirty page back (errors are recorded for the next <see cref="Fsync"/>, as at close in the kernel),
    /// drops the cached pages and closes the file. The caller has unmapped it from every address space; a mapping
    /// that still maps it throws <see cref="InvalidOperationException"/> and stays open.
    /// </summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _disposed) != 0) return;
        lock (_inodeLock)
        {
            if (HasMappers)
                throw new InvalidOperationException($"page cache: {Path} is still mapped by {MapperCount} address space area(s); unmap it first.");
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            var spin = new SpinWait();
            while (Volatile.Read(ref _walkers) != 0) spin.SpinOnce(sleep1Threshold: 20);
            try { WritebackRange(0, ulong.MaxValue, sync: true); }
            catch (IOException) { /* recorded in the errseq; the pages are dropped with the file */ }
            TruncateInodePages(0);
            WaitForAsyncReads();
            lock (_treeLock) _tree.Dispose();
        }
        _cache.Remove(this);
        _sizeLock.Dispose();
        _file.Dispose();
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(nameof(FileMapping), $"{Path} is closed.");
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Path} ({Length} bytes, {CachedPages} pages cached)";
}
