using System.Buffers;
using System.Numerics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of native memory for Kestrel, System.IO.Pipelines and any code that rents buffers:
/// up to 8 KiB from the kmalloc caches, larger buffers as compound pages from the page allocator. Owner objects are
/// recycled, so a Rent/Dispose pair allocates no managed bytes in steady state. With
/// <see cref="NativeMemoryPoolOptions.DebugChecks"/>, returning twice and using after return throw.
/// </summary>
/// <remarks>Thread-safe: rent on one thread, return on another.</remarks>
public sealed unsafe class NativeMemoryPool : MemoryPool<byte>
{
    private readonly SlabAllocator _slab;
    private readonly PageAllocator _pages;
    private readonly NativeMemoryOwner?[] _owners;
    private readonly KmemCache? _defaultCache;
    private readonly Lock _ownersLock = new();
    private int _ownerCount;
    private long _rentedBytes;
    private long _rentedBuffers;
    private long _totalRents;
    private long _totalReturns;
    private long _failures;
    private bool _disposed;

    /// <summary>Creates a pool over the slab and page allocators of <paramref name="system"/>.</summary>
    public NativeMemoryPool(MemorySystem system, NativeMemoryPoolOptions? options = null)
        : this(system.Slab, options) { }

    /// <summary>Creates a pool over <paramref name="slab"/> and its page allocator.</summary>
    public NativeMemoryPool(SlabAllocator slab, NativeMemoryPoolOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(slab);
        _slab = slab;
        _pages = slab.Pages;
        Options = options ?? new NativeMemoryPoolOptions();
        if (Options.DefaultBufferSize <= 0 || Options.MaxBufferSize < Options.DefaultBufferSize
            || Options.MaxBufferSize > PageFrame.PageSize << PageAllocator.MaxOrder)
            throw new ArgumentException("Need 0 < DefaultBufferSize <= MaxBufferSize <= 4 MiB.");
        _owners = new NativeMemoryOwner?[Math.Max(0, Options.MaxPooledOwners)];
        if (Options.ExposeAsArrays)
        {
            // The default size plus the array header would waste half of an 8 KiB slot; give it a cache of its own.
            _defaultCache = slab.CreateCache($"memory-pool-{Options.DefaultBufferSize}", Options.DefaultBufferSize + NativeArrayHeader.Size, 64);
        }
        NativeMemoryPoolRegistry.Add(this);
    }

    /// <summary>The page allocator behind the pool.</summary>
    public PageAllocator Pages => _pages;

    /// <summary>The pool's configuration.</summary>
    public NativeMemoryPoolOptions Options { get; }

    /// <summary>Largest buffer <see cref="Rent"/> returns.</summary>
    public override int MaxBufferSize => Options.MaxBufferSize;

    internal bool DebugChecks => Options.DebugChecks;

    /// <summary>Bytes currently rented out.</summary>
    public long RentedBytes => Interlocked.Read(ref _rentedBytes);

    /// <summary>Buffers currently rented out.</summary>
    public long RentedBuffers => Interlocked.Read(ref _rentedBuffers);

    /// <summary>Rent calls so far.</summary>
    public long TotalRents => Interlocked.Read(ref _totalRents);

    /// <summary>Buffers returned so far.</summary>
    public long TotalReturns => Interlocked.Read(ref _totalReturns);

    /// <summary>Rent calls that found no memory.</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>Owner objects waiting for reuse.</summary>
    public int PooledOwners { get { lock (_ownersLock) return _ownerCount; } }

    /// <summary>
    /// Rents a buffer of at least <paramref name="minBufferSize"/> bytes (-1: the default size).
    /// Throws <see cref="OutOfMemoryException"/> when memory runs out and <see cref="ArgumentOutOfRangeException"/> above <see cref="MaxBufferSize"/>.
    /// </summary>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int size = minBufferSize <= 0 ? Options.DefaultBufferSize : minBufferSize;
        if (size > Options.MaxBufferSize)
            throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"Larger than MaxBufferSize ({Options.MaxBufferSize}).");
        int prefix = Options.ExposeAsArrays ? NativeArrayHeader.Size : 0;
        int block = BufferLength(size + prefix);
        byte* p = AllocBlock(block);
        if (p == null)
        {
            Interlocked.Increment(ref _failures);
            throw new OutOfMemoryException($"NativeMemoryPool: no memory for a {block}-byte buffer.");
        }
        int length = block - prefix;
        NativeMemoryOwner owner = TakeOwner();
        owner.Attach(p + prefix, length, prefix != 0);
        Interlocked.Add(ref _rentedBytes, length);
        Interlocked.Increment(ref _rentedBuffers);
        Interlocked.Increment(ref _totalRents);
        return owner;
    }

    /// <summary>The block a request is rounded to: the default-size cache, a kmalloc slot up to 8 KiB, then a power-of-two page block.</summary>
    internal int BufferLength(int size)
    {
        if (_defaultCache != null && size <= _defaultCache.ObjectSize && size > _defaultCache.ObjectSize / 2) return _defaultCache.ObjectSize;
        if (size <= SlabAllocator.KmallocMaxCacheSize) return _slab.KmallocCache((nuint)size)!.ObjectSize;
        return PageFrame.PageSize << OrderOf(size);
    }

    private byte* AllocBlock(int block)
    {
        if (_defaultCache != null && block == _defaultCache.ObjectSize) return (byte*)_defaultCache.Alloc(Gfp.Kernel | Gfp.NoWarn);
        if (block <= SlabAllocator.KmallocMaxCacheSize) return (byte*)_slab.Kmalloc((nuint)block, Gfp.Kernel | Gfp.NoWarn);
        return _pages.GetFreePages(Gfp.Kernel | Gfp.NoWarn | Gfp.Comp, OrderOf(block));
    }

    private void FreeBlock(byte* p, int block)
    {
        if (_defaultCache != null && block == _defaultCache.ObjectSize) _defaultCache.Free(p);
        else if (block <= SlabAllocator.KmallocMaxCacheSize) _slab.Kfree(p);
        else _pages.FreePages(p, OrderOf(block));
    }

    private static int OrderOf(int length)
        => BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)((length + PageFrame.PageSize - 1) / PageFrame.PageSize)));

    internal void Return(NativeMemoryOwner owner, byte* p, int length)
    {
        int prefix = Options.ExposeAsArrays ? NativeArrayHeader.Size : 0;
        // A buffer returned after its memory system was disposed has nothing to go back to (the arena went with it).
        if (!_pages.IsDisposed) FreeBlock(p - prefix, length + prefix);
        Interlocked.Add(ref _rentedBytes, -length);
        Interlocked.Decrement(ref _rentedBuffers);
        Interlocked.Increment(ref _totalReturns);
        if (!Options.DebugChecks) GiveBackOwner(owner);
    }

    private NativeMemoryOwner TakeOwner()
    {
        if (!Options.DebugChecks)
        {
            lock (_ownersLock)
            {
                if (_ownerCount > 0)
                {
                    NativeMemoryOwner owner = _owners[--_ownerCount]!;
                    _owners[_ownerCount] = null;
                    return owner;
                }
            }
        }
        return new NativeMemoryOwner(this);
    }

    private void GiveBackOwner(NativeMemoryOwner owner)
    {
        lock (_ownersLock)
        {
            if (_ownerCount < _owners.Length) _owners[_ownerCount++] = owner;
        }
    }

    /// <summary>Stops renting; buffers still rented stay valid until returned.</summary>
    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        NativeMemoryPoolRegistry.Remove(this);
        if (_defaultCache != null && RentedBuffers == 0) _defaultCache.Destroy();
        lock (_ownersLock)
        {
            Array.Clear(_owners);
            _ownerCount = 0;
        }
    }
}
