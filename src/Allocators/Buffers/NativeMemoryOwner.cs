using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Buffers;

/// <summary>
/// One pooled buffer and its <see cref="IMemoryOwner{T}"/>: native memory from the slab or page allocator, or a pinned
/// array when the pool exposes arrays. Owner and buffer stay together while pooled, so renting one takes one id
/// from a cache. With debug checks every rent gets a fresh owner over the same buffer, so a returned owner stays
/// returned and any use of it throws.
/// </summary>
internal sealed unsafe class NativeMemoryOwner : MemoryManager<byte>, IMemoryOwner<byte>
{
    private readonly NativeMemoryPool _pool;
    private readonly int _length;
    private readonly bool _check;
    private readonly bool _isArray;
    private readonly byte* _pointer;
    // With arrays the span, the pin and the array view all come from this one reference, read once: a stale Memory
    // whose owner was evicted then sees one real array, never one buffer's address with another's length.
    private byte[]? _array;
    private Memory<byte> _memory;
    private int _rented;

    /// <summary>An owner of a native block of <paramref name="length"/> bytes at <paramref name="pointer"/>.</summary>
    public NativeMemoryOwner(NativeMemoryPool pool, int sizeClass, int length, byte* pointer)
    {
        _pool = pool;
        _check = pool.DebugChecks;
        SizeClass = sizeClass;
        _length = length;
        _pointer = pointer;
        _memory = CreateMemory(length);
    }

    /// <summary>An owner of <paramref name="array"/>, allocated pinned (its address holds for as long as it lives).</summary>
    public NativeMemoryOwner(NativeMemoryPool pool, int sizeClass, byte[] array)
    {
        _pool = pool;
        _check = pool.DebugChecks;
        SizeClass = sizeClass;
        _length = array.Length;
        _isArray = true;
        _array = array;
        _pointer = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
        // Without checks the Memory is over the array itself, as Kestrel's own pool hands out: no virtual call and no
        // rented check on every Span. With checks it goes through this owner, which throws once the buffer is returned.
        _memory = _check ? CreateMemory(_length) : array;
    }

    /// <summary>Id in the pool's owner table.</summary>
    public int Id { get; set; }

    /// <summary>The pool's size class of the buffer.</summary>
    public int SizeClass { get; }

    /// <summary>Buffer length in bytes.</summary>
    public int Length => _length;

    /// <summary>The native block (null for an array).</summary>
    public byte* Pointer => _isArray ? null : _pointer;

    /// <summary>The array (null for a native block, or once detached).</summary>
    public byte[]? Array => _array;

    /// <summary>The owner's buffer as handed out.</summary>
    public override Memory<byte> Memory
    {
        get
        {
            if (_check && Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
            return _memory;
        }
    }

    /// <summary>Marks the buffer rented (the pool has just taken it from a cache).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MarkRented() => Volatile.Write(ref _rented, 1);

    /// <summary>A new owner over this one's buffer, with the same id; this one lets go of the buffer for good.</summary>
    public NativeMemoryOwner Successor()
    {
        NativeMemoryOwner next = _isArray
            ? new NativeMemoryOwner(_pool, SizeClass, _array!)
            : new NativeMemoryOwner(_pool, SizeClass, _length, _pointer);
        next.Id = Id;
        Detach();
        return next;
    }

    /// <summary>Lets go of the buffer (evicted, or handed to a successor): any later use of this owner throws.</summary>
    public void Detach()
    {
        Volatile.Write(ref _rented, 0);
        Volatile.Write(ref _array, null);
    }

    void IDisposable.Dispose() => Dispose(true);

    protected override void Dispose(bool disposing)
    {
        // The exchange makes two returns of one buffer, even racing ones, put it back once: a buffer in a cache twice
        // would be handed to two renters.
        if (Interlocked.Exchange(ref _rented, 0) == 0)
        {
            if (_check)
                throw new InvalidOperationException($"NativeMemoryPool '{_pool.Name}': buffer 0x{(nuint)_pointer:x} ({_length} bytes) was returned twice.");
            return;
        }
        _pool.Return(this);
    }

    protected override bool TryGetArray(out ArraySegment<byte> segment)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        if (!_isArray)
        {
            segment = default;
            return false;
        }
        segment = new ArraySegment<byte>(RentedArray());
        return true;
    }

    public override Span<byte> GetSpan()
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        if (_isArray) return RentedArray();
        _pool.Kasan?.Check(_pointer, (nuint)_length, write: false, "NativeMemoryOwner.GetSpan");
        return new Span<byte>(_pointer, _length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        if ((uint)elementIndex > (uint)_length) throw new ArgumentOutOfRangeException(nameof(elementIndex));
        if (_isArray)
        {
            byte[] array = RentedArray();
            return new MemoryHandle((byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array)) + elementIndex);
        }
        return new MemoryHandle(_pointer + elementIndex);
    }

    public override void Unpin() { }

    private byte[] RentedArray()
    {
        byte[]? array = Volatile.Read(ref _array);
        // Null when the owner was detached between the caller's rented check and this read.
        if (array is null) ThrowUsedAfterReturn();
        return array;
    }

    [DoesNotReturn]
    private void ThrowUsedAfterReturn()
        => throw new ObjectDisposedException(nameof(NativeMemoryPool),
            $"NativeMemoryPool '{_pool.Name}': buffer 0x{(nuint)_pointer:x} ({_length} bytes) used after it was returned.");
}
