using System.Buffers;
using System.Numerics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of native memory for Kestrel, System.IO.Pipelines and any code that rents buffers:
/// up to 8 KiB from the kmalloc caches, larger buffers as compound pages from the page allocator. With
/// <see cref="NativeMemoryPoolOptions.ExposeAsArrays"/> every buffer is instead a pinned <c>byte[]</c>, pooled by size.
/// Owner objects (and arrays) are recycled, so a Rent/Dispose pair allocates no managed bytes in steady state. With
/// <see cref="NativeMemoryPoolOptions.DebugChecks"/>, returning twice and using after return throw.
/// </summary>
/// <remarks>Thread-safe: rent on one thread, return on another.</remarks>
public sealed unsafe class NativeMemoryPool : MemoryPool<byte>
{
    private readonly SlabAllocator _slab;
    private readonly PageAllocator _pages;
    private readonly BoundedStack<NativeMemoryOwner> _owners;
    private readonly PinnedArrayPool? _arrays;
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
        _owners = new BoundedStack<NativeMemoryOwner>(Options.MaxPooledOwners);
        if (Options.ExposeAsArrays)
            _arrays = new PinnedArrayPool(Options.DefaultBufferSize, Math.Max(0, Options.MaxPooledOwners), Math.Max(0, Options.MaxPooledArrayBytes));
        NativeMemoryPoolRegistry.Add(this);
    }

    /// <summary>The page allocator behind the pool.</summary>
    public PageAllocator Pages => _pages;

    /// <summary>The pool's configuration.</summary>
    public NativeMemoryPoolOptions Options { get; }

    /// <summary>Largest buffer <see cref="Rent"/> returns.</summary>
    public override int MaxBufferSize => Options.MaxBufferSize;

    internal bool DebugChecks => Options.DebugChecks;

    internal bool ExposeAsArrays => _arrays != null;

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
    public int PooledOwners => _owners.Count;

    /// <summary>Bytes in returned arrays kept for reuse (<see cref="NativeMemoryPoolOptions.ExposeAsArrays"/> only).</summary>
    public long PooledArrayBytes => _arrays?.PooledBytes ?? 0;

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
        NativeMemoryOwner owner;
        int length;
        if (_arrays != null)
        {
            byte[] array = RentArray(_arrays.LengthFor(size));
            owner = TakeOwner();
            owner.Attach(array);
            length = array.Length;
        }
        else
        {
            length = BufferLength(size);
            byte* p = AllocBlock(length);
            if (p == null)
            {
                Interlocked.Increment(ref _failures);
                throw new OutOfMemoryException($"NativeMemoryPool: no memory for a {length}-byte buffer.");
            }
            owner = TakeOwner();
            owner.Attach(p, length);
        }
        Interlocked.Add(ref _rentedBytes, length);
        Interlocked.Increment(ref _rentedBuffers);
        Interlocked.Increment(ref _totalRents);
        return owner;
    }

    private byte[] RentArray(int length)
    {
        try
        {
            return _arrays!.Rent(length);
        }
        catch (OutOfMemoryException)
        {
            Interlocked.Increment(ref _failures);
            throw;
        }
    }

    /// <summary>The native block a request is rounded to: a kmalloc slot up to 8 KiB, then a power-of-two page block.</summary>
    private int BufferLength(int size)
    {
        if (size <= SlabAllocator.KmallocMaxCacheSize) return _slab.KmallocCache((nuint)size)!.ObjectSize;
        return PageFrame.PageSize << OrderOf(size);
    }

    private byte* AllocBlock(int block)
    {
        if (block <= SlabAllocator.KmallocMaxCacheSize) return (byte*)_slab.Kmalloc((nuint)block, Gfp.Kernel | Gfp.NoWarn);
        return _pages.GetFreePages(Gfp.Kernel | Gfp.NoWarn | Gfp.Comp, OrderOf(block));
    }

    private void FreeBlock(byte* p, int block)
    {
        if (block <= SlabAllocator.KmallocMaxCacheSize) _slab.Kfree(p);
        else _pages.FreePages(p, OrderOf(block));
    }

    private static int OrderOf(int length)
        => BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)((length + PageFrame.PageSize - 1) / PageFrame.PageSize)));

    /// <summary>Takes back the buffer of <paramref name="owner"/>: <paramref name="array"/> if it had one, else the native block.</summary>
    internal void Return(NativeMemoryOwner owner, byte* p, int length, byte[]? array)
    {
        // A buffer returned after its memory system was disposed has nothing to go back to (the arena went with it).
        if (array == null) { if (!_pages.IsDisposed) FreeBlock(p, length); }
        else if (!_disposed) _arrays!.Return(array);
        Interlocked.Add(ref _rentedBytes, -length);
        Interlocked.Decrement(ref _rentedBuffers);
        Interlocked.Increment(ref _totalReturns);
        if (!Options.DebugChecks && !_disposed) _owners.TryPush(owner);
    }

    private NativeMemoryOwner TakeOwner()
    {
        if (!Options.DebugChecks && _owners.TryPop(out NativeMemoryOwner? owner)) return owner;
        return new NativeMemoryOwner(this);
    }

    /// <summary>Stops renting and lets go of pooled owners and arrays; buffers still rented stay valid until returned.</summary>
    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        NativeMemoryPoolRegistry.Remove(this);
        _arrays?.Clear();
        while (_owners.TryPop(out _)) { }
    }
}
