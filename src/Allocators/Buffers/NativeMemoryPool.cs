using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Allocators.Kasan;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using Allocators.Threading;

namespace Allocators.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> for Kestrel, System.IO.Pipelines and any code that rents buffers: native memory (up
/// to 32 KiB from the kmalloc caches, larger buffers as compound pages), or with
/// <see cref="NativeMemoryPoolOptions.ExposeAsArrays"/> pinned <c>byte[]</c>s. Buffers come in power-of-two size
/// classes and are kept for reuse with their owner objects, first in the renting or returning thread's own cache (no
/// lock, no atomic instruction on the pool, counters per thread summed on read), then in shared stacks per class.
/// Unused buffers go back: periodically (<see cref="NativeMemoryPoolOptions.TrimInterval"/>), all of them when the
/// system is idle (<see cref="MemorySystemOptions.IdleTrimAfter"/>) or on <see cref="Trim"/>, and under memory pressure
/// (a page allocator shrinker for native buffers; for arrays, a rent that finds the heap full trims first).
/// A rent that finds no memory raises <see cref="RentFailed"/>, counts in <c>allocators.memory_pool.rent_failures</c>
/// and throws <see cref="MemoryPoolExhaustedException"/>. With <see cref="NativeMemoryPoolOptions.DebugChecks"/>,
/// returning twice and using after return throw.
/// </summary>
/// <remarks>Thread-safe: rent on one thread, return on another.</remarks>
public sealed unsafe partial class NativeMemoryPool : MemoryPool<byte>, IThreadCacheOwner
{
    private readonly SlabAllocator _slab;
    private readonly PageAllocator _pages;
    private readonly bool _arrays;
    private readonly bool _debug;
    private readonly KasanShadow? _kasan; // native buffers in a KASAN arena: poisoned while the pool holds them
    private readonly int _maxBufferSize;
    private readonly int _defaultClass;
    private readonly int _defaultLength;
    private readonly int _defaultLow;
    private readonly ThreadCacheRegistry _caches;
    private readonly PoolOwnerTable _owners = new();
    private readonly PoolDepot* _depots;
    private readonly PoolCounters* _counters;
    private volatile bool _disposed;

    /// <summary>Creates a pool over <paramref name="slab"/> and its page allocator.</summary>
    public NativeMemoryPool(SlabAllocator slab, NativeMemoryPoolOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(slab);
        _slab = slab;
        _pages = slab.Pages;
        Options = options ?? new NativeMemoryPoolOptions();
        if (Options.DefaultBufferSize <= 0 || Options.MaxBufferSize < Options.DefaultBufferSize
            || Options.MaxBufferSize > 1 << PoolSizeClasses.MaxShift)
            throw new ArgumentException("Need 0 < DefaultBufferSize <= MaxBufferSize <= 4 MiB.");
        if (Options.TrimInterval is { } interval && interval <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(options), interval, "TrimInterval must be positive (or null for none).");
        _arrays = Options.ExposeAsArrays;
        _debug = Options.DebugChecks;
        _kasan = _arrays ? null : slab.Kasan;
        _maxBufferSize = Options.MaxBufferSize;
        _defaultLength = Options.DefaultBufferSize;
        _defaultLow = _defaultLength / 2;
        _defaultClass = System.Numerics.BitOperations.IsPow2(_defaultLength) ? PoolSizeClasses.PowerOfTwoClass(_defaultLength) : PoolSizeClasses.DefaultClass;

        Span<int> capacities = stackalloc int[PoolSizeClasses.Count];
        _depots = (PoolDepot*)CacheLines.AllocIsolated((nuint)(PoolSizeClasses.Count * sizeof(PoolDepot)));
        _counters = (PoolCounters*)CacheLines.AllocIsolated((nuint)sizeof(PoolCounters));
        for (int c = 0; c < PoolSizeClasses.Count; c++)
        {
            int length = c == PoolSizeClasses.DefaultClass ? _defaultLength : PoolSizeClasses.PowerOfTwoLength(c);
            bool used = length <= _maxBufferSize && (c != PoolSizeClasses.DefaultClass || _defaultClass == c);
            capacities[c] = used && Options.ThreadCacheBytes >= length ? Math.Min(MaxThreadCached, Options.ThreadCacheBytes / length) : 0;
            _depots[c] = new PoolDepot { Length = length, ThreadCapacity = capacities[c] };
        }
        *_counters = default;
        _capacities = capacities.ToArray();
        _lengths = new int[PoolSizeClasses.Count];
        for (int c = 0; c < PoolSizeClasses.Count; c++) _lengths[c] = _depots[c].Length;
        _caches = new ThreadCacheRegistry(this, PoolThreadCache.BlockSize(capacities));
        Name = NativeMemoryPoolRegistry.Add(this, Options.Name ?? "memory-pool");
        if (!_arrays) RegisterShrinker();
        StartReaper();
    }

    /// <summary>Most buffers of one class a thread caches.</summary>
    private const int MaxThreadCached = 64;

    private readonly int[] _capacities;
    private readonly int[] _lengths;

    /// <summary>The pool's name (<see cref="NativeMemoryPoolOptions.Name"/>, made unique among live pools).</summary>
    public string Name { get; }

    /// <summary>The page allocator behind the pool.</summary>
    public PageAllocator Pages => _pages;

    /// <summary>The pool's configuration.</summary>
    public NativeMemoryPoolOptions Options { get; }

    /// <summary>The arena's KASAN shadow when the pool's buffers are native and KASAN is on; otherwise null.</summary>
    internal KasanShadow? Kasan => _kasan;

    /// <summary>Largest buffer <see cref="Rent"/> returns.</summary>
    public override int MaxBufferSize => _maxBufferSize;

    internal bool DebugChecks => _debug;

    /// <summary>
    /// Raised on the renting thread when a rent finds no memory, before <see cref="MemoryPoolExhaustedException"/> is
    /// thrown. Handlers must not rent from the pool themselves.
    /// </summary>
    public event Action<MemoryPoolRentFailure>? RentFailed;

    /// <summary>
    /// Rents a buffer of at least <paramref name="minBufferSize"/> bytes (-1: the default size).
    /// Throws <see cref="MemoryPoolExhaustedException"/> when memory runs out and <see cref="ArgumentOutOfRangeException"/>
    /// above <see cref="MaxBufferSize"/>.
    /// </summary>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (_disposed) ThrowDisposed();
        int sizeClass = ClassOf(minBufferSize);
        ThreadCacheHeader* cache = _caches.Current;
        if (cache != null && ThreadCacheHeader.TryEnter(cache))
        {
            PoolMagazine* magazine = PoolThreadCache.Magazine(cache, sizeClass);
            int count = magazine->Count;
            if (count != 0)
            {
                int id = magazine->Slots[count - 1];
                magazine->Count = count - 1;
                if (count - 1 < magazine->LowWater) magazine->LowWater = count - 1;
                PoolThreadStats* stats = PoolThreadCache.Stats(cache);
                int length = magazine->Length;
                stats->Rents++;
                stats->RentedBytes += length;
                stats->RentedTotal += length;
                ThreadCacheHeader.Exit(cache);
                NativeMemoryOwner owner = _owners.Get(id);
                owner.MarkRented();
                if (_kasan != null) KasanUnpoison(owner);
                return owner;
            }
            ThreadCacheHeader.Exit(cache);
        }
        return RentSlow(sizeClass, minBufferSize);
    }

    /// <summary>Takes back <paramref name="owner"/>'s buffer (called once per rent, by the owner's Dispose).</summary>
    internal void Return(NativeMemoryOwner owner)
    {
        if (_debug) owner = Succeed(owner);
        if (_kasan != null) KasanPoison(owner);
        ThreadCacheHeader* cache = _caches.Current;
        if (cache != null && ThreadCacheHeader.TryEnter(cache))
        {
            PoolMagazine* magazine = PoolThreadCache.Magazine(cache, owner.SizeClass);
            int count = magazine->Count;
            if (count < magazine->Capacity)
            {
                magazine->Slots[count] = owner.Id;
                magazine->Count = count + 1;
                PoolThreadStats* stats = PoolThreadCache.Stats(cache);
                stats->Returns++;
                stats->RentedBytes -= owner.Length;
                ThreadCacheHeader.Exit(cache);
                return;
            }
            ThreadCacheHeader.Exit(cache);
        }
        ReturnSlow(owner);
    }

    /// <summary>The size class of a request; throws above <see cref="MaxBufferSize"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ClassOf(int minBufferSize)
    {
        if (minBufferSize <= 0) return _defaultClass;
        if (minBufferSize > _maxBufferSize) ThrowTooLarge(minBufferSize);
        if (minBufferSize <= _defaultLength && minBufferSize > _defaultLow) return _defaultClass;
        return PoolSizeClasses.PowerOfTwoClass(minBufferSize);
    }

    [DoesNotReturn]
    private void ThrowTooLarge(int minBufferSize)
        => throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"Larger than MaxBufferSize ({_maxBufferSize}).");

    [DoesNotReturn]
    private void ThrowDisposed() => throw new ObjectDisposedException(nameof(NativeMemoryPool), $"NativeMemoryPool '{Name}' is disposed.");

    /// <summary>
    /// Stops renting and gives back every pooled buffer; buffers still rented stay valid and are freed when returned.
    /// </summary>
    protected override void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        NativeMemoryPoolRegistry.Remove(this);
        StopReaper();
        if (!_arrays) UnregisterShrinker();
        // Threads' caches go to the shared stacks (in-flight operations waited for), and everything there is evicted.
        _caches.Dispose();
        // Closed depots take nothing more (a racing return evicts its buffer), so once emptied their memory can go;
        // the depot and counter blocks themselves stay, since a buffer returned later still counts there.
        for (int c = 0; c < PoolSizeClasses.Count; c++) PoolDepot.Close(_depots + c);
        EvictDepots();
        for (int c = 0; c < PoolSizeClasses.Count; c++) PoolDepot.Free(_depots + c);
    }
}
