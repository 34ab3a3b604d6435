using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>
/// One kmalloc allocation or slab cache object as an <see cref="IMemoryOwner{T}"/> of bytes: <see cref="Memory"/> and
/// <see cref="Span"/> view it, <see cref="Dispose()"/> frees it. From <see cref="SlabAllocatorExtensions.RentMemory"/> or
/// <see cref="KmemCacheExtensions.RentMemory"/>.
/// </summary>
/// <remarks>
/// <para>Thread-safe as the raw API is: rent on one thread, dispose on another. A second <see cref="Dispose()"/>, and a
/// view (<see cref="Memory"/>, <see cref="Span"/>, <see cref="MemoryManager{T}.Pin"/>, or the span of a
/// <see cref="Memory{T}"/> taken earlier) after dispose, throw <see cref="ObjectDisposedException"/> naming the
/// address, and change nothing. Owner objects are reused, so a rent and dispose allocate no managed bytes in steady
/// state; the checks above hold until the object is rented again, which a stale reference cannot tell apart. With
/// <see cref="SlabAllocatorOptions.TrackOwnerLeaks"/> owners are never reused (every misuse is caught) and one dropped
/// without dispose is reported with its allocation site. Two disposes racing on two threads are not told apart
/// (the flag is read and cleared without a locked instruction, as kfree's fast path frees without one), and the slab
/// layer catches two threads freeing one pointer at once only with <see cref="SlabAllocatorOptions.SerializedFrees"/>.
/// Such a race is misuse this class does not catch.</para>
/// <para>After the memory system is disposed, <see cref="Dispose()"/> does nothing (the memory went with the arena).</para>
/// </remarks>
public sealed unsafe class SlabMemoryOwner : MemoryManager<byte>, IMemoryOwner<byte>, IDisposable
{
    private static readonly ContextPool<SlabMemoryOwner> s_pool = new();

    private SlabAllocator _slab = null!;
    private byte* _pointer;
    private int _length;
    private int _rented;
    private OwnerLeakTracker? _tracker;
    private bool _reusable; // made with leak tracking off: goes back to the pool when disposed

    private SlabMemoryOwner() { }

    /// <summary>Bytes in the buffer (what was asked for; the slot may be larger).</summary>
    public int Length => _length;

    /// <summary>The buffer's address, for diagnostics and for matching reports.</summary>
    public nuint Address => (nuint)_pointer;

    /// <summary>The buffer as a span; throws <see cref="ObjectDisposedException"/> after <see cref="Dispose()"/>.</summary>
    public Span<byte> Span => GetSpan();

    /// <summary>The buffer as memory; throws <see cref="ObjectDisposedException"/> after <see cref="Dispose()"/>.</summary>
    public override Memory<byte> Memory
    {
        get
        {
            if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterDispose();
            return CreateMemory(_length);
        }
    }

    /// <summary>
    /// Allocates <paramref name="length"/> bytes from kmalloc and wraps them. An <paramref name="inner"/> owner is part
    /// of another owner (a writer's segment), which the leak tracking watches instead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static SlabMemoryOwner Rent(SlabAllocator slab, int length, Gfp gfp, bool inner = false)
    {
        if (slab is null || length < 0) ThrowBadRent(slab, length);
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        var p = (byte*)slab.Kmalloc(ctx, (nuint)length, gfp);
        if (p == null) ThrowOutOfMemory(null, length);
        return Wrap(ctx, slab, null, p, length, inner);
    }

    /// <summary>Allocates one object of <paramref name="cache"/> and wraps it.</summary>
    internal static SlabMemoryOwner Rent(KmemCache cache, Gfp gfp)
    {
        ArgumentNullException.ThrowIfNull(cache);
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        var p = (byte*)cache.Alloc(ctx, gfp);
        if (p == null) ThrowOutOfMemory(cache, cache.ObjectSize);
        return Wrap(ctx, cache.Owner, cache, p, cache.ObjectSize, inner: false);
    }

    /// <summary>
    /// An owner (a reused one unless tracking) for the live allocation <paramref name="p"/>, an object of
    /// <paramref name="cache"/> or (null) from kmalloc; frees it if no owner can be had.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static SlabMemoryOwner Wrap(SlabThreadContext* ctx, SlabAllocator slab, KmemCache? cache, byte* p, int length, bool inner)
    {
        SlabMemoryOwner? owner;
        if (slab.Options.TrackOwnerLeaks || (owner = s_pool.Take(ctx)) == null) return WrapNew(slab, cache, p, length, inner);
        if (!ReferenceEquals(owner._slab, slab)) owner._slab = slab;
        owner._pointer = p;
        owner._length = length;
        Volatile.Write(ref owner._rented, 1);
        return owner;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static SlabMemoryOwner WrapNew(SlabAllocator slab, KmemCache? cache, byte* p, int length, bool inner)
    {
        try
        {
            bool tracking = slab.Options.TrackOwnerLeaks;
            var owner = new SlabMemoryOwner { _slab = slab, _pointer = p, _length = length, _reusable = !tracking };
            if (tracking && !inner)
                owner._tracker = new OwnerLeakTracker(slab, owner, (cache ?? slab.KmallocCache((nuint)length))?.Name ?? "kmalloc");
            Volatile.Write(ref owner._rented, 1);
            return owner;
        }
        catch
        {
            slab.Kfree(p); // the caller gets the exception and keeps nothing
            throw;
        }
    }

    /// <summary>
    /// Frees the buffer. A second call throws <see cref="ObjectDisposedException"/> naming the address and changes
    /// nothing; so does misuse the slab layer finds (the buffer freed through the raw API meanwhile).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Dispose()
    {
        if (Volatile.Read(ref _rented) == 0) ThrowDisposedTwice();
        Volatile.Write(ref _rented, 0);
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        if (!_slab.KfreeFast(ctx, _pointer) && !FreeSlow()) return;
        if (_reusable) s_pool.Give(ctx, this);
        else _tracker?.Disarm();
    }

    /// <summary>kfree's slow path for the buffer; false when the memory system is gone (nothing to free, nothing to reuse).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool FreeSlow()
    {
        try
        {
            _slab.KfreeSlow(_pointer);
            return true;
        }
        catch (ObjectDisposedException) when (_slab.IsDisposed)
        {
            // The arena went with the memory system.
            _tracker?.Disarm();
            return false;
        }
        catch
        {
            Volatile.Write(ref _rented, 1);
            throw;
        }
    }

    /// <inheritdoc/>
    public override Span<byte> GetSpan()
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterDispose();
        // KASAN: a view over memory freed behind the owner's back (a kfree of its pointer) is a use after free.
        _slab.Kasan?.Check(_pointer, (nuint)_length, write: false, "SlabMemoryOwner.GetSpan");
        return new Span<byte>(_pointer, _length);
    }

    /// <summary>The address of element <paramref name="elementIndex"/>: native memory never moves, so nothing is pinned.</summary>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterDispose();
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)elementIndex, (uint)_length, nameof(elementIndex));
        return new MemoryHandle(_pointer + elementIndex);
    }

    /// <inheritdoc/>
    public override void Unpin() { }

    /// <summary>Frees the buffer (see <see cref="Dispose()"/>).</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing) Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() => $"{nameof(SlabMemoryOwner)} 0x{(nuint)_pointer:x} ({_length} bytes{(Volatile.Read(ref _rented) == 0 ? ", disposed" : "")})";

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowBadRent(SlabAllocator? slab, int length)
    {
        ArgumentNullException.ThrowIfNull(slab);
        throw new ArgumentOutOfRangeException(nameof(length), length, "A buffer's length cannot be negative.");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowOutOfMemory(KmemCache? cache, int length)
        => throw new OutOfMemoryException(cache is null ? $"kmalloc({length}): out of memory." : $"kmem_cache_alloc({cache.Name}): out of memory.");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposedTwice()
        => throw new ObjectDisposedException(nameof(SlabMemoryOwner), $"{nameof(SlabMemoryOwner)}: buffer 0x{(nuint)_pointer:x} ({_length} bytes) was already disposed.");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowUsedAfterDispose()
        => throw new ObjectDisposedException(nameof(SlabMemoryOwner), $"{nameof(SlabMemoryOwner)}: buffer 0x{(nuint)_pointer:x} ({_length} bytes) used after Dispose.");
}
