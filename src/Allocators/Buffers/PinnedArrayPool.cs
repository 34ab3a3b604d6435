using System.Numerics;

namespace Allocators.Buffers;

/// <summary>
/// Real <c>byte[]</c> buffers for pools that must hand out arrays: allocated pinned on the pinned object heap (never
/// moved, so the socket layer can hold their address without pinning handles) and kept by size class for reuse.
/// An array's length is the runtime's, so a reference kept after return can reach only its own bytes.
/// </summary>
internal sealed class PinnedArrayPool
{
    // Smaller arrays are mostly header; the classes are powers of two from here up to the pool's 4 MiB ceiling.
    private const int MinLength = 16;
    private const int MaxClassLog2 = 22;
    private const int DefaultClass = MaxClassLog2 + 1;

    private readonly int _defaultLength;
    private readonly int _maxPerClass;
    private readonly long _maxPooledBytes;
    private readonly BoundedStack<byte[]>?[] _classes = new BoundedStack<byte[]>?[DefaultClass + 1];
    private long _pooledBytes;

    /// <param name="defaultLength">A class of its own, so that a default size which is not a power of two wastes nothing.</param>
    /// <param name="maxPerClass">Most arrays kept in one class.</param>
    /// <param name="maxPooledBytes">Most bytes kept over all classes; arrays returned beyond it are left to the GC.</param>
    public PinnedArrayPool(int defaultLength, int maxPerClass, long maxPooledBytes)
    {
        _defaultLength = defaultLength;
        _maxPerClass = maxPerClass;
        _maxPooledBytes = maxPooledBytes;
    }

    /// <summary>Bytes in arrays waiting for reuse.</summary>
    public long PooledBytes => Interlocked.Read(ref _pooledBytes);

    /// <summary>The array length a request of <paramref name="size"/> bytes (at most 4 MiB) is rounded to.</summary>
    public int LengthFor(int size)
    {
        if (size <= _defaultLength && size > _defaultLength / 2) return _defaultLength;
        return (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(size, MinLength));
    }

    /// <summary>An array of exactly <paramref name="length"/> bytes (a value from <see cref="LengthFor"/>), reused if one is pooled.</summary>
    public byte[] Rent(int length)
    {
        BoundedStack<byte[]>? stack = _classes[ClassOf(length)];
        if (stack != null && stack.TryPop(out byte[]? array))
        {
            Interlocked.Add(ref _pooledBytes, -array.Length);
            return array;
        }
        return GC.AllocateUninitializedArray<byte>(length, pinned: true);
    }

    /// <summary>Keeps <paramref name="array"/> for reuse while the class and the byte budget have room.</summary>
    public void Return(byte[] array)
    {
        if (Interlocked.Add(ref _pooledBytes, array.Length) <= _maxPooledBytes && StackFor(array.Length).TryPush(array)) return;
        Interlocked.Add(ref _pooledBytes, -array.Length);
    }

    /// <summary>Lets go of every pooled array.</summary>
    public void Clear()
    {
        foreach (BoundedStack<byte[]>? stack in _classes)
        {
            if (stack == null) continue;
            while (stack.TryPop(out byte[]? array)) Interlocked.Add(ref _pooledBytes, -array.Length);
        }
    }

    private int ClassOf(int length) => length == _defaultLength && !BitOperations.IsPow2(length) ? DefaultClass : BitOperations.Log2((uint)length);

    private BoundedStack<byte[]> StackFor(int length)
    {
        int index = ClassOf(length);
        BoundedStack<byte[]>? stack = Volatile.Read(ref _classes[index]);
        if (stack != null) return stack;
        // Created on first return, once per class: sized so that one class alone cannot exceed the byte budget.
        var created = new BoundedStack<byte[]>((int)Math.Min(_maxPerClass, _maxPooledBytes / length));
        return Interlocked.CompareExchange(ref _classes[index], created, null) ?? created;
    }
}
