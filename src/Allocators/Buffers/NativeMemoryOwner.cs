using System.Buffers;

namespace Allocators.Buffers;

/// <summary>
/// One rented buffer: an <see cref="IMemoryOwner{T}"/> over native memory from the slab or page allocator.
/// Recycled by its pool after <see cref="IDisposable.Dispose"/> unless the pool runs with debug checks.
/// </summary>
internal sealed unsafe class NativeMemoryOwner : MemoryManager<byte>, IMemoryOwner<byte>
{
    private readonly NativeMemoryPool _pool;
    private byte* _pointer;
    private int _length;
    private int _rented;
    private byte[]? _array;

    public NativeMemoryOwner(NativeMemoryPool pool) => _pool = pool;

    internal byte* Pointer => _pointer;

    internal int Length => _length;

    internal void Attach(byte* pointer, int length, bool exposeAsArray)
    {
        _pointer = pointer;
        _length = length;
        _array = exposeAsArray ? NativeArrayHeader.Create(pointer, length) : null;
        Volatile.Write(ref _rented, 1);
    }

    protected override bool TryGetArray(out ArraySegment<byte> segment)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        if (_array is null)
        {
            segment = default;
            return false;
        }
        segment = new ArraySegment<byte>(_array, 0, _length);
        return true;
    }

    public override Span<byte> GetSpan()
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
        return new Span<byte>(_pointer, _length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if (Volatile.Read(ref _rented) == 0) ThrowUsedAfterReturn();
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
        _array = null;
        if (!_pool.DebugChecks) _pointer = null;
        _pool.Return(this, p, length);
    }

    private void ThrowUsedAfterReturn()
        => throw new ObjectDisposedException(nameof(NativeMemoryPool),
            $"NativeMemoryPool: buffer 0x{(nuint)_pointer:x} ({_length} bytes) used after it was returned.");
}
