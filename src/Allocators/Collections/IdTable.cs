namespace Allocators.Collections;

/// <summary>
/// Objects a page names by number (an anon_vma family, a shmem object: the stand-ins for page->mapping, which a page
/// frame in native memory cannot hold as a reference). Numbers are never reused, so a page that still names an object
/// that went finds nothing rather than a stranger. One lock, taken alone.
/// </summary>
internal sealed class IdTable<T> where T : class
{
    private readonly Dictionary<int, T> _items = [];
    private int _next;

    /// <summary>A number no object had before.</summary>
    public int NextId() => Interlocked.Increment(ref _next);

    /// <summary>Enters <paramref name="item"/> under <paramref name="id"/>.</summary>
    public void Add(int id, T item)
    {
        lock (_items) _items.Add(id, item);
    }

    /// <summary>The object <paramref name="id"/> went.</summary>
    public void Remove(int id)
    {
        lock (_items) _items.Remove(id);
    }

    /// <summary>The object named <paramref name="id"/>, or null once it went.</summary>
    public T? Get(int id)
    {
        lock (_items) return _items.GetValueOrDefault(id);
    }

    /// <summary>The live objects, as of the call.</summary>
    public T[] Values()
    {
        lock (_items) return [.. _items.Values];
    }
}
