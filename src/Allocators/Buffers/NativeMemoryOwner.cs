using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Buffers;

/// <summary>
/// One rented buffer: an <see cref="IMemoryOwner{T}"/> over native memory from the slab or page allocator, or over a
/// pinned array when the pool exposes arrays. Recycled by its pool after <see cref="IDisposable.Dispose"/> unless the
/// pool runs with debug checks.
/// </summary>
internal sealed unsafe class NativeMemoryOwner : MemoryManager<byte>, IMemoryOwner<byte>
{
    private readonly NativeMemoryPool _pool;
    private readonly bool _exposeArray;
    private byte* _pointer;
    private int _length;
    private int _rented;
    // With arrays the span, the pin and the array view all come from this one reference, read once: a stale Memory
    // whose owner has been recycled then sees one real array, never one buffer's address with another's length.
    private byte[]? _array;

    public NativeMemoryOwner(NativeMemoryPool pool)
    {
        _pool = pool;
        _exposeArray = pool.ExposeAsArrays;
    }

    internal byte* Pointer => _pointer;

    internal int Length => _length;

    internal void Attach(byte* pointer, int length)
    {
        _pointer = pointer;
        _length = length;
        Volatile.Write(ref _rented, 1);
    }

    internal void Attach(byte[] array)
    {
        _array = array;
        // The array is on the pinned object heap: its address holds for as long as it lives.
        _pointer = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
        _length = array.Length;
        Volatile.Write(ref _rented, 1);
    }

    protected override bool TryGetArray(out ArraySegment<byte> segment)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        if (!_exposeArray)
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
        if (_exposeArray) return RentedArray();
        return new Span<byte>(_pointer, _length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        if (_exposeArray)
        {
            byte[] array = RentedArray();
            if ((uint)elementIndex > (uint)array.Length) throw new ArgumentOutOfRangeException(nameof(elementIndex));
            return new MemoryHandle((byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array)) + elementIndex);
        }
        if ((uint)elementIndex > (uint)_length) throw new ArgumentOutOfRangeException(nameof(elementIndex));
        return new MemoryHandle(_pointer + elementIndex);
    }

    public override void Unpin() { }

    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _rented, 0) == 0)
        {
            if (_pool.DebugChecks)
                throw new InvalidOperationException($"NativeMemoryPool: buffer 0x{(nuint)_pointer:x} ({_length} bytes) was returned twice.");
            return;
        }
        byte* p = _pointer;
        int length = _length;
        byte[]? array = _array;
        _array = null;
        if (!_pool.DebugChecks) _pointer = null;
        _pool.Return(this, p, length, array);
    }

    private byte[] RentedArray()
    {
        byte[]? array = Volatile.Read(ref _array);
        // Null when the owner was returned between the caller's rented check and this read.
        if (array is null) ThrowUsedAfterReturn();
        return array;
    }

    [DoesNotReturn]
    private void ThrowUsedAfterReturn()
        => throw new ObjectDisposedException(nameof(NativeMemoryPool),
            $"NativeMemoryPool: buffer 0x{(nuint)_pointer:x} ({_length} bytes) used after it was returned.");
}
