namespace Allocators.Tests.Threading;

/// <summary>
/// A bounded blocking queue for the tests' producer and consumer threads: one lock, and waits on it for room and for
/// items. The tests use it instead of <c>BlockingCollection&lt;T&gt;</c>, which on .NET 10.0.401 (linux-x64) now and
/// then throws "The underlying collection was modified from outside of the BlockingCollection" in a consumer fed by two
/// producers, with nothing but the BCL in the process (a 20-line program: about one crash in 1000 rounds of 40,000
/// items), and so took the whole test host down.
/// </summary>
internal sealed class HandOffQueue<T>(int capacity = int.MaxValue)
{
    private readonly Queue<T> _items = new();
    private readonly object _lock = new();
    private bool _completed;

    /// <summary>Adds <paramref name="item"/>, waiting while the queue holds <c>capacity</c> items.</summary>
    public void Add(T item)
    {
        lock (_lock)
        {
            while (_items.Count >= capacity && !_completed) Monitor.Wait(_lock);
            if (_completed) throw new InvalidOperationException("Add after CompleteAdding.");
            _items.Enqueue(item);
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>No more items will come: consumers stop once the queue is empty.</summary>
    public void CompleteAdding()
    {
        lock (_lock)
        {
            _completed = true;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>True once adding is complete and every item was taken.</summary>
    public bool IsCompleted
    {
        get { lock (_lock) return _completed && _items.Count == 0; }
    }

    /// <summary>The oldest item if there is one, without waiting.</summary>
    public bool TryTake(out T item)
    {
        lock (_lock)
        {
            if (!_items.TryDequeue(out item!)) return false;
            Monitor.PulseAll(_lock);
            return true;
        }
    }

    /// <summary>Items as they come, waiting for each, until adding is complete and the queue is empty.</summary>
    public IEnumerable<T> GetConsumingEnumerable()
    {
        while (true)
        {
            T item;
            lock (_lock)
            {
                while (_items.Count == 0 && !_completed) Monitor.Wait(_lock);
                if (!_items.TryDequeue(out item!)) yield break;
                Monitor.PulseAll(_lock);
            }
            yield return item;
        }
    }
}
