using System.Buffers;
using System.Runtime.CompilerServices;
using Allocators.Kasan;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Allocators.Threading;

namespace Allocators.Buffers;

// The pool's slow paths: a thread's magazine empty or full (a batch moves to or from the class's depot under its spin
// lock), no buffer anywhere (a new one is allocated), and the thread-cache owner callbacks. Counters that the slow
// path changes are shared and atomic; the fast path (NativeMemoryPool.cs) only ever writes its thread's own block.
// Invariant: every live buffer is in exactly one of: rented, a thread's magazine, a depot; its owner id is in the
// owner table from allocation until eviction.
public sealed unsafe partial class NativeMemoryPool
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    private IMemoryOwner<byte> RentSlow(int sizeClass, int minBufferSize)
    {
        PoolDepot* depot = _depots + sizeClass;
        int id = -1;
        ThreadCacheHeader* cache = _capacities[sizeClass] > 0 ? CurrentCache() : null;
        if (cache != null && ThreadCacheHeader.TryEnter(cache))
        {
            PoolMagazine* magazine = PoolThreadCache.Magazine(cache, sizeClass);
            // Refill half the magazine, so that the next returns have room and the next rents find buffers.
            int n = magazine->Count == 0 ? PoolDepot.Pop(depot, magazine->Slots, (magazine->Capacity + 1) / 2) : 0;
            if (n > 0)
            {
                Interlocked.Add(ref _counters->DepotBytes, -(long)n * depot->Length);
                id = magazine->Slots[n - 1];
                magazine->Count = n - 1;
            }
            ThreadCacheHeader.Exit(cache);
        }
        else if (PoolDepot.Pop(depot, &id, 1) == 1)
            Interlocked.Add(ref _counters->DepotBytes, -depot->Length);
        else id = -1;

        NativeMemoryOwner owner = id >= 0 ? _owners.Get(id) : Allocate(sizeClass, minBufferSize);
        if (id >= 0 && _kasan != null) KasanUnpoison(owner);
        Interlocked.Increment(ref _counters->Rents);
        Interlocked.Add(ref _counters->RentedBytes, owner.Length);
        Interlocked.Add(ref _counters->RentedTotal, owner.Length);
        owner.MarkRented();
        return owner;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReturnSlow(NativeMemoryOwner owner)
    {
        int sizeClass = owner.SizeClass;
        Interlocked.Increment(ref _counters->Returns);
        Interlocked.Add(ref _counters->RentedBytes, -owner.Length);
        if (_disposed)
        {
            Evict(owner);
            return;
        }
        int id = owner.Id;
        ThreadCacheHeader* cache = _capacities[sizeClass] > 0 ? CurrentCache() : null;
        if (cache != null && ThreadCacheHeader.TryEnter(cache))
        {
            PoolMagazine* magazine = PoolThreadCache.Magazine(cache, sizeClass);
            if (magazine->Count == magazine->Capacity)
            {
                // Half the magazine, the oldest, goes to the depot; the newest (warm in this core's cache) stay.
                int half = (magazine->Count + 1) / 2;
                ToDepot(sizeClass, magazine->Slots, half);
                int* slots = magazine->Slots;
                new Span<int>(slots + half, magazine->Count - half).CopyTo(new Span<int>(slots, magazine->Count));
                magazine->Count -= half;
                magazine->LowWater = Math.Min(magazine->LowWater, magazine->Count);
            }
            magazine->Slots[magazine->Count++] = id;
            ThreadCacheHeader.Exit(cache);
            return;
        }
        ToDepot(sizeClass, &id, 1);
    }

    /// <summary>The current thread's cache, created on first use; null once the pool is disposed.</summary>
    private ThreadCacheHeader* CurrentCache()
    {
        try
        {
            return _caches.GetOrCreateCurrent();
        }
        catch (ObjectDisposedException)
        {
            return null; // disposed meanwhile: the caller takes the shared path
        }
    }

    /// <summary>Puts <paramref name="count"/> ids into their class's depot as far as the byte budget allows; evicts the rest.</summary>
    private void ToDepot(int sizeClass, int* ids, int count)
    {
        PoolDepot* depot = _depots + sizeClass;
        long room = (Options.MaxPooledBytes - Volatile.Read(ref _counters->DepotBytes)) / depot->Length;
        int pushed = _disposed ? 0 : PoolDepot.Push(depot, ids, count, (int)Math.Clamp(room, 0, count));
        if (pushed > 0) Interlocked.Add(ref _counters->DepotBytes, (long)pushed * depot->Length);
        for (int i = pushed; i < count; i++) Evict(_owners.Get(ids[i]));
    }

    /// <summary>A new buffer of <paramref name="sizeClass"/> with its owner; reports and throws when there is no memory.</summary>
    private NativeMemoryOwner Allocate(int sizeClass, int minBufferSize)
    {
        int length = _lengths[sizeClass];
        NativeMemoryOwner owner;
        if (_arrays)
        {
            byte[] array;
            try
            {
                array = GC.AllocateUninitializedArray<byte>(length, pinned: true);
            }
            catch (OutOfMemoryException)
            {
                Trim();
                throw RentFailure(minBufferSize, length, "the garbage-collected heap is out of memory (GCHeapHardLimit or the container's limit)");
            }
            owner = new NativeMemoryOwner(this, sizeClass, array);
        }
        else
        {
            // The page allocator runs its shrinkers, this pool's among them, before it gives up.
            byte* p = AllocBlock(length);
            if (p == null)
                throw RentFailure(minBufferSize, length, $"the arena ({_pages.ManagedPages * (long)PageFrame.PageSize >> 20} MiB) is out of memory; raise PhysicalMemoryOptions.Size or rent less");
            owner = new NativeMemoryOwner(this, sizeClass, length, p);
        }
        owner.Id = _owners.Add(owner);
        Interlocked.Increment(ref _counters->Allocations);
        Interlocked.Add(ref _counters->AllocatedBytes, length);
        return owner;
    }

    private byte* AllocBlock(int length)
    {
        if (length <= SlabAllocator.KmallocMaxCacheSize) return (byte*)_slab.Kmalloc((nuint)length, Gfp.Kernel | Gfp.NoWarn);
        return _pages.GetFreePages(Gfp.Kernel | Gfp.NoWarn | Gfp.Comp, OrderOf(length));
    }

    private static int OrderOf(int length) => SlabAllocator.LargeKmallocOrder((nuint)length);

    /// <summary>Counts and reports a rent that found no memory; returns the exception to throw.</summary>
    private MemoryPoolExhaustedException RentFailure(int requested, int length, string why)
    {
        Interlocked.Increment(ref _counters->Failures);
        long rented = Statistics().RentedBytes;
        var failure = new MemoryPoolRentFailure(Name, requested, length, rented,
            $"NativeMemoryPool '{Name}': no memory for a {length}-byte buffer ({rented} bytes rented out): {why}.");
        RentFailed?.Invoke(failure);
        return new MemoryPoolExhaustedException(failure);
    }

    /// <summary>Frees <paramref name="owner"/>'s buffer (an array is left to the garbage collector) and retires its id.</summary>
    private void Evict(NativeMemoryOwner owner)
    {
        _owners.Remove(owner.Id);
        byte* p = owner.Pointer;
        owner.Detach();
        // A buffer evicted after its memory system was disposed has nothing to go back to (the arena went with it).
        if (p != null && !_pages.IsDisposed)
        {
            // The allocator checks a free against the shadow: a buffer the pool held is poisoned as freed.
            if (_kasan != null) KasanUnpoison(owner);
            if (owner.Length <= SlabAllocator.KmallocMaxCacheSize) _slab.Kfree(p);
            else _pages.FreePages(p, OrderOf(owner.Length));
        }
        Interlocked.Increment(ref _counters->Evictions);
        Interlocked.Add(ref _counters->EvictedBytes, owner.Length);
        // An evicted array is garbage for the GC, whoever evicted it (a reaper, a trim, a return over the budget).
        if (_arrays) Interlocked.Add(ref s_uncollectedArrayBytes, owner.Length);
        Interlocked.Add(ref _counters->AllocatedBytes, -owner.Length);
    }

    /// <summary>With debug checks: the owner handed out next time is a fresh one, so the returned one stays dead.</summary>
    private NativeMemoryOwner Succeed(NativeMemoryOwner owner)
    {
        NativeMemoryOwner next = owner.Successor();
        _owners.Replace(next.Id, next);
        return next;
    }

    void IThreadCacheOwner.InitCache(ThreadCacheHeader* cache) => PoolThreadCache.Init(cache, _capacities, _lengths);

    void IThreadCacheOwner.FlushCache(ThreadCacheHeader* cache)
    {
        for (int c = 0; c < PoolSizeClasses.Count; c++)
        {
            PoolMagazine* magazine = PoolThreadCache.Magazine(cache, c);
            if (magazine->Count == 0) continue;
            ToDepot(c, magazine->Slots, magazine->Count);
            magazine->Count = 0;
            magazine->LowWater = 0;
        }
    }

    void IThreadCacheOwner.RetireCache(ThreadCacheHeader* cache)
    {
        PoolThreadStats* stats = PoolThreadCache.Stats(cache);
        Interlocked.Add(ref _counters->Rents, stats->Rents);
        Interlocked.Add(ref _counters->Returns, stats->Returns);
        Interlocked.Add(ref _counters->RentedBytes, stats->RentedBytes);
        Interlocked.Add(ref _counters->RentedTotal, stats->RentedTotal);
        *stats = default;
    }

    // A new thread takes over an exited one's buffers and counters as they are: both are only summed.
    bool IThreadCacheOwner.AdoptCache(ThreadCacheHeader* cache) => true;

    /// <summary>
    /// KASAN for a buffer the pool takes back (as the kernel's mempool does for its elements,
    /// kasan_mempool_poison_object): poisoned as freed while it waits in a magazine or depot, so a checked access
    /// through a view kept after the return is reported as a use after free.
    /// </summary>
    private void KasanPoison(NativeMemoryOwner owner)
    {
        byte code = owner.Length <= SlabAllocator.KmallocMaxCacheSize ? KasanShadowCode.SlabFree : KasanShadowCode.PageFree;
        _kasan!.Poison(owner.Pointer, (nuint)owner.Length, code);
    }

    /// <summary>KASAN for a buffer leaving the pool (rented again or freed): accessible again (kasan_mempool_unpoison_object).</summary>
    private void KasanUnpoison(NativeMemoryOwner owner) => _kasan!.Unpoison(owner.Pointer, (nuint)owner.Length);
}
