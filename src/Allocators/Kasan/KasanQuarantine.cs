using System.Diagnostics;
using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Kasan;

/// <summary>One thread's quarantine list (the kernel's per-CPU <c>cpu_quarantine</c>), in native memory found without a lock.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct QuarantineThreadList
{
    public ThreadCacheHeader Header;
    public QuarantineList List;
}

/// <summary>
/// KASAN's quarantine (mm/kasan/quarantine.c): freed slab objects, large kmallocs and blocks of pages wait, poisoned, before they really
/// go back to their allocator, so a use after free hits poisoned shadow instead of the next owner's data. A free goes
/// on the calling thread's list with no shared lock; a list that reaches <see cref="BatchBytes"/> moves whole, as one
/// batch, to the global FIFO (one lock per batch), which gives its oldest blocks back while it holds more than
/// <see cref="MaxBytes"/>. Shrinking or destroying a cache takes its blocks off every list at once (<see cref="Flush()"/>),
/// so "everything freed and shrunk" still means empty slabs. Blocks a reduce took off the FIFO are given back outside
/// the lock and counted meanwhile; a flush waits for that count to reach zero (the kernel's synchronize_srcu in
/// quarantine_remove_cache), so none of the flushed cache's objects is still in another thread's hands when it returns.
/// </summary>
/// <remarks>
/// <para>The bound: <c>Bytes ≤ MaxBytes + T × BatchBytes</c>, T = threads with a list. The global FIFO holds at most
/// MaxBytes after every batch it takes in, and a thread's list holds less than BatchBytes between frees (the free that
/// reaches it moves the list), so held bytes are the two summed. The kernel's per-CPU size is 1 MiB; here the batch is
/// also at most a sixteenth of the limit, so a small arena's quarantine still turns over.</para>
/// <para>Per-thread lists rather than the kernel's per-CPU ones: the lists are blocks of a <see cref="ThreadCacheRegistry"/>,
/// owned by this quarantine (so each system's frees stay in its own), entered with the registry's asymmetric protocol so
/// a flush on another thread takes a list without a lock on the free path. A list whose thread exited is adopted with its
/// blocks by the next thread that registers, or moved to the global FIFO when the registry retires it; until then a
/// flush still finds it. The links live with the freed memory (slab objects: in their slot's KASAN metadata; large
/// kmallocs: their first bytes; blocks of pages: their head page's page_ext words), so the quarantine allocates nothing. Blocks are given back outside the global lock.</para>
/// </remarks>
public sealed unsafe class KasanQuarantine : IThreadCacheOwner
{
    /// <summary>The kernel's QUARANTINE_PERCPU_SIZE: the most one thread's list holds before it moves.</summary>
    private const long PerThreadBytes = 1 << 20;

    /// <summary>A thread's list holds at most this fraction of the limit, so T × BatchBytes stays near it on small arenas.</summary>
    private const int BatchFraction = 16;

    private readonly Lock _lock = new();
    private int _givingBack; // evictions taken off the FIFO under _lock and not yet given back (flushes wait for them)
    private ThreadCacheRegistry? _threads;         // made at the first free, so an arena without a slab layer holds no slot
    private bool _closed;
    private QuarantineList _global;
    private long _batches;
    private long _largestBlock;                    // debug builds only (NoteBlock)

    internal KasanQuarantine(long maxBytes)
    {
        MaxBytes = maxBytes;
        BatchBytes = Math.Min(PerThreadBytes, maxBytes / BatchFraction);
    }

    /// <summary>Bytes the global FIFO holds at most (<c>CheckedModeOptions.QuarantineBytes</c>); each thread's list adds less than <see cref="BatchBytes"/>.</summary>
    public long MaxBytes { get; }

    /// <summary>Bytes a thread's list reaches before it moves to the global FIFO as one batch.</summary>
    public long BatchBytes { get; }

    /// <summary>Bytes held now, on every thread's list and in the global FIFO.</summary>
    public long Bytes => Sum(bytes: true);

    /// <summary>Blocks held now, on every thread's list and in the global FIFO.</summary>
    public long Count => Sum(bytes: false);

    /// <summary>Bytes in the global FIFO alone.</summary>
    internal long GlobalBytes { get { lock (_lock) return _global.Bytes; } }

    /// <summary>Batches moved from a thread's list to the global FIFO so far (each took the global lock once).</summary>
    internal long Batches => Volatile.Read(ref _batches);

    /// <summary>Threads that have a list now.</summary>
    internal int ThreadLists => Volatile.Read(ref _threads)?.Count ?? 0;

    /// <summary>Gives a block back to its allocator: (owner, object). Set by the slab layer.</summary>
    internal Action<nint, nint>? Release { get; set; }

    /// <summary>The owner of blocks of pages (their frame is the object); <see cref="ReleasePages"/> gives them back.</summary>
    internal const nint PageOwner = -1;

    /// <summary>Gives a block of pages back to the page allocator: (<see cref="PageOwner"/>, frame). Set by the page allocator.</summary>
    internal Action<nint, nint>? ReleasePages { get; set; }

    /// <summary>Queues a freed block whose link is at <paramref name="link"/> (quarantine_put); a full thread list moves to the global FIFO, which gives back its oldest blocks over the limit (quarantine_reduce).</summary>
    internal void Put(QuarantineLink* link, nint owner, void* obj, long bytes)
    {
        link->Owner = owner;
        link->Object = (nint)obj;
        link->Bytes = bytes;
        NoteBlock(bytes);
        ThreadCacheRegistry? threads = Volatile.Read(ref _threads);
        var mine = threads == null ? null : (QuarantineThreadList*)threads.Current;
        if (mine == null) mine = Register();
        if (mine == null || !ThreadCacheHeader.TryEnter(&mine->Header))
        {
            // A flush holds this thread's list (or the quarantine is closed): this one block takes the global lock.
            PutGlobal(link);
            return;
        }
        mine->List.Put(link);
        bool full = mine->List.Bytes >= BatchBytes;
        QuarantineList evicted = default;
        if (full)
        {
            // Moved while the list is still entered, so a flush that waits for it then finds the batch in the FIFO.
            lock (_lock)
            {
                _global.MoveAllFrom(ref mine->List);
                _batches++;
                Reduce(ref evicted);
            }
        }
        Debug.Assert(mine->List.Bytes < BatchBytes || mine->List.Count == 0, "a thread's list moves when it reaches the batch size");
        ThreadCacheHeader.Exit(&mine->Header);
        if (!full) return;
        GiveBackEvicted(ref evicted);
        Volatile.Read(ref _threads)?.RetireExited();
        AssertBound();
    }

    /// <summary>
    /// Debug builds: held bytes within <c>MaxBytes + T × BatchBytes</c>, each list allowed one block of slack (another
    /// thread's list passes the batch size by its last block between that free and the move).
    /// </summary>
    [Conditional("DEBUG")]
    private void AssertBound()
    {
        long held = Bytes;
        long threads = ThreadLists + 1; // a list retired meanwhile is counted in the FIFO
        long bound = MaxBytes + threads * (BatchBytes + Volatile.Read(ref _largestBlock));
        Debug.Assert(held <= bound, $"the quarantine holds {held} bytes, over {MaxBytes} + {threads} x ({BatchBytes} + one block)");
    }

    /// <summary>Debug builds: remembers the largest block put, the slack <see cref="AssertBound"/> allows a list in flight.</summary>
    [Conditional("DEBUG")]
    private void NoteBlock(long bytes) => AtomicMax.Raise(ref _largestBlock, bytes);

    /// <summary>The calling thread's new list (and the registry, at the first free); null once closed.</summary>
    private QuarantineThreadList* Register()
    {
        ThreadCacheRegistry threads;
        lock (_lock)
        {
            if (_closed) return null;
            threads = _threads ??= new ThreadCacheRegistry(this, sizeof(QuarantineThreadList));
        }
        try
        {
            return (QuarantineThreadList*)threads.GetOrCreateCurrent();
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
    }

    private void PutGlobal(QuarantineLink* link)
    {
        QuarantineList evicted = default;
        lock (_lock)
        {
            _global.Put(link);
            Reduce(ref evicted);
        }
        GiveBackEvicted(ref evicted);
    }

    /// <summary>
    /// Takes the oldest blocks off the global FIFO until it holds at most <see cref="MaxBytes"/> (into an empty
    /// <paramref name="evicted"/>), counting them as being given back until <see cref="GiveBackEvicted"/>. Lock held.
    /// </summary>
    private void Reduce(ref QuarantineList evicted)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        Debug.Assert(evicted.Head == null, "a reduce starts a chain of its own");
        while (_global.Bytes > MaxBytes) evicted.Put(_global.TakeFirst());
        if (evicted.Head != null) Interlocked.Increment(ref _givingBack);
        Debug.Assert(_global.Bytes <= MaxBytes, "the global FIFO holds at most MaxBytes after a reduce");
    }

    /// <summary>Gives back what <see cref="Reduce"/> evicted (quarantine_reduce's release, outside the lock), then uncounts it.</summary>
    private void GiveBackEvicted(ref QuarantineList evicted)
    {
        if (evicted.Head == null) return;
        try
        {
            GiveBack(ref evicted);
        }
        finally
        {
            Interlocked.Decrement(ref _givingBack);
        }
    }

    /// <summary>Gives every held block back (quarantine_remove_cache for every cache).</summary>
    public void Flush() => Flush(owner: null);

    /// <summary>
    /// Gives back every block of <paramref name="owner"/> (every block for null) on every thread's list, exited threads'
    /// included, and in the global FIFO (quarantine_remove_cache). The threads' lists are taken before the FIFO: a list
    /// that moves meanwhile moves into the FIFO, which is read after.
    /// </summary>
    internal void Flush(nint? owner)
    {
        var taken = new QuarantineList[1];
        Volatile.Read(ref _threads)?.DrainAll(p => ((QuarantineThreadList*)p)->List.MoveOwner(owner, ref taken[0]), Holds);
        lock (_lock) _global.MoveOwner(owner, ref taken[0]);
        // quarantine_remove_cache's synchronize_srcu: blocks another thread's reduce took off the FIFO are back in
        // their caches before this returns (a cache being destroyed must not count them as live, nor have them
        // given back to it afterwards).
        var spin = new SpinWait();
        while (Volatile.Read(ref _givingBack) != 0) spin.SpinOnce(sleep1Threshold: 30);
        GiveBack(ref taken[0]);
    }

    /// <summary>Gives back everything and closes the per-thread lists; later frees go to the global FIFO alone.</summary>
    internal void Close()
    {
        lock (_lock) _closed = true;
        Flush();
        Volatile.Read(ref _threads)?.Dispose();
    }

    /// <summary>True when <paramref name="obj"/> waits in the quarantine, on any thread's list or in the FIFO (a linear walk: reports and tests only).</summary>
    internal bool Contains(void* obj)
    {
        nint address = (nint)obj;
        bool found = false;
        Volatile.Read(ref _threads)?.DrainAll(p => found |= ((QuarantineThreadList*)p)->List.Contains(address), Holds);
        lock (_lock) found |= _global.Contains(address);
        return found;
    }

    private static bool Holds(nint list) => Volatile.Read(ref ((QuarantineThreadList*)list)->List.Count) != 0;

    /// <summary>Held bytes (or blocks): the FIFO's, then each thread's list's as last written (exact when no free is in flight).</summary>
    private long Sum(bool bytes)
    {
        long sum;
        lock (_lock) sum = bytes ? _global.Bytes : _global.Count;
        Volatile.Read(ref _threads)?.ForEach(p =>
        {
            QuarantineList* list = &((QuarantineThreadList*)p)->List;
            sum += bytes ? Volatile.Read(ref list->Bytes) : Volatile.Read(ref list->Count);
        });
        return sum;
    }

    /// <summary>Gives a chain of unlinked blocks back, their links cleared first; every block is attempted, the first failure rethrown after.</summary>
    private void GiveBack(ref QuarantineList chain)
    {
        Exception? failure = null;
        QuarantineLink* q = chain.Head;
        chain = default;
        while (q != null)
        {
            QuarantineLink* next = q->Next;
            nint owner = q->Owner, obj = q->Object;
            q->Owner = 0;
            q->Object = 0;
            try
            {
                (owner == PageOwner ? ReleasePages : Release)?.Invoke(owner, obj);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failure ??= e;
            }
            q = next;
        }
        if (failure != null) throw failure;
    }

    /// <summary>An exiting thread's list (or one left at a close) joins the global FIFO, where it ages with the rest.</summary>
    void IThreadCacheOwner.FlushCache(ThreadCacheHeader* cache)
    {
        var list = (QuarantineThreadList*)cache;
        QuarantineList evicted = default;
        lock (_lock)
        {
            _global.MoveAllFrom(ref list->List);
            Reduce(ref evicted);
        }
        try
        {
            GiveBackEvicted(ref evicted);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The registry is retiring the list under its lock and has no caller to tell; what the slab layer found
            // wrong is in its reports.
        }
    }

    void IThreadCacheOwner.RetireCache(ThreadCacheHeader* cache) { }

    void IThreadCacheOwner.InitCache(ThreadCacheHeader* cache) { }

    /// <summary>A registering thread takes over an exited thread's list, blocks and all: they keep their place in line.</summary>
    bool IThreadCacheOwner.AdoptCache(ThreadCacheHeader* cache) => true;
}
