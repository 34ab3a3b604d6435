using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Threading;

/// <summary>What a <see cref="ThreadCacheRegistry"/> calls back into; only on slow paths.</summary>
internal unsafe interface IThreadCacheOwner
{
    /// <summary>Moves every cached item back to the shared structures. The caller has exclusive access.</summary>
    void FlushCache(ThreadCacheHeader* cache);

    /// <summary>The cache is about to be freed (its thread exited or the owner is disposed): fold its counters.</summary>
    void RetireCache(ThreadCacheHeader* cache);

    /// <summary>Sets up a new, zeroed cache block before its thread first sees it.</summary>
    void InitCache(ThreadCacheHeader* cache);

    /// <summary>
    /// A thread that is registering may adopt the cache of a thread that has exited, contents and all, instead of the
    /// exited one flushing it and the new one starting empty. True: the cache is fit for its new thread (the owner has
    /// reset what was about the old one); false: it is retired as usual. Registry lock held.
    /// </summary>
    bool AdoptCache(ThreadCacheHeader* cache);
}

/// <summary>
/// Per-thread cache blocks (native memory) for one owner, e.g. a page allocator or a slab cache.
/// Finding the current thread's block is a thread-static array lookup with no atomic and no lock.
/// The registry can drain every thread's block from any thread (<see cref="DrainAll()"/>). The block of a thread that
/// exited is adopted, with what it caches, by the next thread that registers (when its owner agrees), or given back to
/// its owner: then, or when a finalizable sentinel in the exited thread's thread-static storage notices, whichever
/// comes first; so cached items are never lost or stranded.
/// </summary>
internal sealed unsafe class ThreadCacheRegistry : IDisposable
{
    /// <summary>One entry of a thread's slot table: the cache of the registry whose generation matches.</summary>
    private struct SlotEntry
    {
        public long Generation;
        public ThreadCacheHeader* Cache;
    }

    /// <summary>
    /// The thread's slot table in native memory: entry 0 holds the capacity in <see cref="SlotEntry.Generation"/>,
    /// entry 1 + slot the cache of the registry using that slot. A primitive thread static (a pointer) is stored
    /// directly in the runtime's thread-local block, so reaching it costs one load after the TLS base.
    /// Slots are reused, generations never, so an entry left by a disposed registry never matches a new one.
    /// </summary>
    [ThreadStatic] private static SlotEntry* t_slots;
    private static long s_lastGeneration;
    [ThreadStatic] private static ThreadExitSentinel? t_sentinel;

    private static readonly Lock s_slotLock = new();
    private static readonly List<bool> s_slotInUse = new();

    private readonly IThreadCacheOwner _owner;
    private readonly nuint _blockSize;
    private readonly Lock _lock = new();
    private readonly List<nint> _caches = new();
    private readonly List<Thread> _threads = new();   // owner of _caches[i]
    private readonly List<nint> _closedBlocks = new(); // blocks a dispose retired, freed by the finalizer
    private long _lastExitScan;                        // Environment.TickCount64 of the last RetireExited scan
    private long _retirements;                         // caches retired so far (written under _lock)
    private static long s_lastToken;
    private int _slot;
    private readonly long _generation = Interlocked.Increment(ref s_lastGeneration);
    private bool _disposed;
    private long _adoptions;

    public ThreadCacheRegistry(IThreadCacheOwner owner, int blockSize)
    {
        _owner = owner;
        _blockSize = (nuint)((blockSize + 63) & ~63);
        lock (s_slotLock)
        {
            int free = s_slotInUse.IndexOf(false);
            if (free < 0) { free = s_slotInUse.Count; s_slotInUse.Add(true); }
            else s_slotInUse[free] = true;
            _slot = free;
        }
    }

    /// <summary>The current thread's cache, or null when it has none yet (or the registry is disposed).</summary>
    public ThreadCacheHeader* Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Lookup(_slot, _generation);
    }

    /// <summary>Slots currently taken by live registries (for leak tests).</summary>
    internal static int SlotsInUse
    {
        get { lock (s_slotLock) return s_slotInUse.Count(used => used); }
    }

    /// <summary>Slot of this registry in every thread's table; int.MaxValue once disposed.</summary>
    public int Slot => _slot;

    /// <summary>Identity of this registry, never reused.</summary>
    public long Id => _generation;

    /// <summary>
    /// The current thread's cache of the registry with this slot and id, or null. Lets native metadata that
    /// records (slot, id) find its per-thread cache without a managed object.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ThreadCacheHeader* Lookup(int slot, long id)
    {
        SlotEntry* slots;
        if (!ThreadRecord.Enabled) slots = t_slots;
        else
        {
            ThreadRecord* r = ThreadRecord.Current();
            if (r != null && (uint)slot < ThreadRecord.InlineSlots)
            {
                long* inline = r->Inline + 2 * slot;
                return inline[0] == id ? (ThreadCacheHeader*)inline[1] : null;
            }
            slots = r != null ? (SlotEntry*)r->Slots : SlotsAfterMiss();
        }
        if (slots != null && (ulong)(uint)slot < (ulong)slots->Generation)
        {
            SlotEntry* e = slots + 1 + slot;
            if (e->Generation == id) return e->Cache;
        }
        return null;
    }

    /// <summary>The thread-local, after the record lookup missed; the record is published for the next lookup.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static SlotEntry* SlotsAfterMiss()
    {
        ThreadRecord.Publish();
        return t_slots;
    }

    /// <summary>The current thread's cache, created on first use.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ThreadCacheHeader* GetOrCreateCurrent()
    {
        ThreadCacheHeader* c = Current;
        return c != null ? c : Register();
    }

    /// <summary>Caches of exited threads adopted by a registering thread so far.</summary>
    internal long Adoptions { get { lock (_lock) return _adoptions; } }

    /// <summary>Number of live per-thread caches.</summary>
    public int Count { get { lock (_lock) return _caches.Count; } }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ThreadCacheHeader* Register()
    {
        ThreadCacheHeader* block;
        int slot;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            slot = _slot;
            // Threads that ended since the last registration give their caches back now, not at the next GC; the first
            // one this thread can adopt is handed on whole (a thread pool or a server that starts a thread per task
            // would otherwise flush a cache to the slabs and refill a new one from them every time).
            block = null;
            for (int i = _caches.Count - 1; i >= 0; i--)
            {
                if (_threads[i].IsAlive) continue;
                if (block == null && TryAdoptLocked(i)) block = (ThreadCacheHeader*)_caches[i];
                else RetireLocked(i);
            }
            if (block == null)
            {
                block = (ThreadCacheHeader*)CacheLines.AllocIsolated(_blockSize);
                NativeMemory.Clear(block, _blockSize);
                block->OwnerThreadId = Environment.CurrentManagedThreadId;
                block->Token = Interlocked.Increment(ref s_lastToken);
                block->Index = _caches.Count;
                _owner.InitCache(block);
                _caches.Add((nint)block);
                _threads.Add(Thread.CurrentThread);
            }
        }
        SlotEntry* slots = t_slots;
        ThreadRecord* record = ThreadRecord.Mine(); // carries copies of the table pointer and of the low slots
        long capacity = slots == null ? 0 : slots->Generation;
        if (capacity <= slot)
        {
            long grown = Math.Max(slot + 1, Math.Max(4, capacity * 2));
            var table = (SlotEntry*)NativeMemory.AllocZeroed((nuint)(grown + 1), (nuint)sizeof(SlotEntry));
            if (slots != null)
            {
                Buffer.MemoryCopy(slots + 1, table + 1, grown * sizeof(SlotEntry), capacity * sizeof(SlotEntry));
                NativeMemory.Free(slots);
            }
            table->Generation = grown;
            t_slots = slots = table;
            if (record != null) record->Slots = table;
        }
        slots[1 + slot] = new SlotEntry { Generation = _generation, Cache = block };
        if (record != null && (uint)slot < ThreadRecord.InlineSlots)
        {
            record->Inline[2 * slot] = _generation;
            record->Inline[2 * slot + 1] = (long)block;
        }
        (t_sentinel ??= new ThreadExitSentinel()).Add(this, block);
        t_sentinel.Slots = slots;
        return block;
    }

    /// <summary>
    /// Takes every thread's cache in turn and flushes it back to the owner. Must not be called from inside a
    /// cache operation of the calling thread (its own Busy flag would never clear).
    /// </summary>
    public void DrainAll() => DrainAll(null);

    /// <summary>
    /// Takes every thread's cache in turn and runs <paramref name="flush"/> on it (the owner's
    /// <see cref="IThreadCacheOwner.FlushCache"/> when null), the owner thread held off it meanwhile. With
    /// <paramref name="holds"/>, only the caches it says hold something are taken (read without holding them: a thread
    /// that fills its cache meanwhile keeps what it took, as it would a moment after the drain). Same restriction as
    /// <see cref="DrainAll()"/>.
    /// </summary>
    public void DrainAll(Action<nint>? flush, Func<nint, bool>? holds = null)
    {
        lock (_lock)
        {
            if (_caches.Count == 0) return;
            var taken = holds == null ? _caches : _caches.Where(holds).ToList();
            if (taken.Count == 0) return;
            // Atomic: a KFENCE sample bit set meanwhile (by the owner or another thread) must survive the drain.
            foreach (nint p in taken) Interlocked.Or(ref ((ThreadCacheHeader*)p)->DrainRequested, ThreadCacheHeader.DrainBit);
            // Either an owner's Busy=1 is now visible to us, or its next read of DrainRequested sees 1.
            Interlocked.MemoryBarrierProcessWide();
            foreach (nint p in taken)
            {
                var cache = (ThreadCacheHeader*)p;
                WaitIdle(cache);
                if (flush != null) flush(p);
                else _owner.FlushCache(cache);
                if (cache->OwnerThreadId != Environment.CurrentManagedThreadId) cache->RemoteDrains++;
                Interlocked.And(ref cache->DrainRequested, ~ThreadCacheHeader.DrainBit);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="visit"/> on every live cache, then <paramref name="thenLocked"/>, while no cache can be added or
    /// retired: a reader that also needs what <see cref="IThreadCacheOwner.RetireCache"/> folded away reads it there.
    /// </summary>
    public void ForEach(Action<nint> visit, Action? thenLocked = null)
    {
        lock (_lock)
        {
            foreach (nint p in _caches) visit(p);
            thenLocked?.Invoke();
        }
    }

    private static void WaitIdle(ThreadCacheHeader* cache)
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref cache->Busy) != 0) spin.SpinOnce(sleep1Threshold: 30);
    }

    private void RetireFromExitedThread(ThreadCacheHeader* cache, long token)
    {
        lock (_lock)
        {
            if (_disposed) return;
            int index = _caches.IndexOf((nint)cache);
            // The block may already be gone (retired at a registration) and its memory reused by another thread.
            if (index < 0 || cache->Token != token) return;
            RetireLocked(index);
        }
    }

    /// <summary>
    /// Gives the cache of an exited thread to the calling thread when its owner agrees (adopts it); the exited thread's
    /// finalizer then finds a new token on it and leaves it alone. Registry lock held.
    /// </summary>
    private bool TryAdoptLocked(int index)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        var cache = (ThreadCacheHeader*)_caches[index];
        WaitIdle(cache);
        if (!_owner.AdoptCache(cache)) return false;
        cache->OwnerThreadId = Environment.CurrentManagedThreadId;
        cache->Token = Interlocked.Increment(ref s_lastToken);
        _adoptions++;
        _threads[index] = Thread.CurrentThread;
        return true;
    }

    private void RetireLocked(int index, bool free = true)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        var cache = (ThreadCacheHeader*)_caches[index];
        WaitIdle(cache);
        _owner.FlushCache(cache);
        _owner.RetireCache(cache);
        cache->Retired = 1;
        Volatile.Write(ref _retirements, _retirements + 1);
        int last = _caches.Count - 1;
        _caches[index] = _caches[last];
        _threads[index] = _threads[last];
        ((ThreadCacheHeader*)_caches[index])->Index = index;
        _caches.RemoveAt(last);
        _threads.RemoveAt(last);
        if (free) CacheLines.Free(cache);
        else _closedBlocks.Add((nint)cache);
    }

    /// <summary>
    /// Flushes every cache (in-flight operations waited for); afterwards no thread finds a cache here. The blocks stay,
    /// drain requested for good, until nothing references the registry (a handle may still hold one: its operations
    /// then fail to enter and take their owner's slow path).
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            int slot = _slot;
            _slot = int.MaxValue; // fast paths stop finding their cache from here on
            foreach (nint p in _caches) Interlocked.Or(ref ((ThreadCacheHeader*)p)->DrainRequested, ThreadCacheHeader.DrainBit);
            Interlocked.MemoryBarrierProcessWide();
            while (_caches.Count > 0) RetireLocked(_caches.Count - 1, free: false);
            _disposed = true;
            lock (s_slotLock) s_slotInUse[slot] = false;
        }
    }

    /// <summary>
    /// Retires the caches of threads that have exited, now rather than when their sentinels are finalized (a GC away):
    /// what they hold goes back to the owner's shared structures, where a thread that needs memory finds it. At most
    /// one scan per millisecond (each is a lock and an <see cref="Thread.IsAlive"/> per cache); true when it retired
    /// something.
    /// </summary>
    public bool RetireExited()
    {
        long now = Environment.TickCount64;
        if (Volatile.Read(ref _lastExitScan) == now) return false;
        Volatile.Write(ref _lastExitScan, now);
        bool retired = false;
        lock (_lock)
        {
            if (_disposed) return false;
            for (int i = _caches.Count - 1; i >= 0; i--)
            {
                if (_threads[i].IsAlive) continue;
                RetireLocked(i);
                retired = true;
            }
        }
        return retired;
    }

    /// <summary>
    /// Caches retired so far, by any route: a caller that finds <see cref="RetireExited"/> skipped (another thread
    /// scanned this millisecond) sees from it whether that scan gave something back meanwhile.
    /// </summary>
    public long Retirements => Volatile.Read(ref _retirements);

    /// <summary>Frees the blocks a dispose kept.</summary>
    ~ThreadCacheRegistry()
    {
        foreach (nint p in _closedBlocks) CacheLines.Free((void*)p);
    }

    /// <summary>Lives in thread-static storage; when its thread is gone the GC finalizes it and the caches go home.</summary>
    private sealed class ThreadExitSentinel
    {
        private readonly List<(ThreadCacheRegistry Registry, nint Cache, long Token)> _entries = new();

        /// <summary>The thread's slot table, freed with the sentinel.</summary>
        public SlotEntry* Slots;

        public void Add(ThreadCacheRegistry registry, ThreadCacheHeader* cache)
        {
            _entries.RemoveAll(e => e.Registry._disposed);
            _entries.Add((registry, (nint)cache, cache->Token));
        }

        ~ThreadExitSentinel()
        {
            foreach (var (registry, cache, token) in _entries)
            {
                try { registry.RetireFromExitedThread((ThreadCacheHeader*)cache, token); }
                catch (Exception) { /* a finalizer must not throw; the owner's Dispose reclaims what is left */ }
            }
            NativeMemory.Free(Slots);
            Slots = null;
        }
    }
}
