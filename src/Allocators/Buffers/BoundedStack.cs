using System.Diagnostics.CodeAnalysis;

namespace Allocators.Buffers;

/// <summary>
/// A locked LIFO of at most a fixed number of objects kept for reuse. Push and pop allocate nothing; the last object
/// returned is the first handed out again, while it is still warm in the cache.
/// </summary>
internal sealed class BoundedStack<T> where T : class
{
    private readonly T?[] _items;
    private readonly Lock _lock = new();
    private int _count;

    public BoundedStack(int capacity) => _items = new T?[Math.Max(0, capacity)];

    public int Count { get { lock (_lock) return _count; } }

    /// <summary>Keeps <paramref name="item"/> unless the stack is full.</summary>
    public bool TryPush(T item)
    {
        lock (_lock)
        {
            if (_count == _items.Length) return false;
            _items[_count++] = item;
            return true;
        }
    }

    public bool TryPop([NotNullWhen(true)] out T? item)
    {
        lock (_lock)
        {
            if (_count == 0)
            {
                item = null;
                return false;
            }
            item = _items[--_count]!;
            _items[_count] = null;
            return true;
        }
    }
}
