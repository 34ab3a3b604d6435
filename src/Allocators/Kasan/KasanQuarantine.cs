using System.Runtime.InteropServices;

namespace Allocators.Kasan;

/// <summary>A quarantined block's link, kept in the freed memory itself (the kernel's <c>qlist_node</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct QuarantineLink
{
    public QuarantineLink* Next;
    public nint Owner;            // who gives the block back: a slab cache's native record, 0 for a large kmalloc
    public nint Object;           // the pointer that was freed
    public long Bytes;            // what it counts against the quarantine's limit
}

/// <summary>
/// KASAN's quarantine (mm/kasan/quarantine.c): freed slab objects and large kmallocs wait, poisoned, in a FIFO bounded by
/// <see cref="MaxBytes"/> before they really go back to their allocator, so a use after free hits poisoned shadow
/// instead of the next owner's data. The oldest blocks leave first when the limit is passed; shrinking or destroying a
/// cache takes its blocks out at once (<see cref="Flush()"/>), so "everything freed and shrunk" still means empty slabs.
/// </summary>
/// <remarks>
/// One global FIFO under a lock (the kernel adds per-CPU batches in front of it; here the checked mode's frees already
/// take the debug path's node lock, so a second lock per free changes little). The links live in the freed memory
/// (slab objects: in their slot's KASAN metadata; large kmallocs: their first bytes), so the quarantine allocates nothing.
/// Blocks are given back outside the lock.
/// </remarks>
public sealed unsafe class KasanQuarantine
{
    private readonly Lock _lock = new();
    private QuarantineLink* _head;
    private QuarantineLink* _tail;
    private long _bytes;
    private long _count;

    internal KasanQuarantine(long maxBytes) => MaxBytes = maxBytes;

    /// <summary>Bytes the quarantine holds at most (<c>CheckedModeOptions.QuarantineBytes</c>).</summary>
    public long MaxBytes { get; }

    /// <summary>Bytes held now.</summary>
    public long Bytes => Volatile.Read(ref _bytes);

    /// <summary>Blocks held now.</summary>
    public long Count => Volatile.Read(ref _count);

    /// <summary>Gives a block back to its allocator: (owner, object). Set by the slab layer.</summary>
    internal Action<nint, nint>? Release { get; set; }

    /// <summary>Queues a freed block whose link is at <paramref name="link"/> and gives back the oldest ones over the limit (quarantine_put + quarantine_reduce).</summary>
    internal void Put(QuarantineLink* link, nint owner, void* obj, long bytes)
    {
        link->Next = null;
        link->Owner = owner;
        link->Object = (nint)obj;
        link->Bytes = bytes;
        QuarantineLink* evicted = null;
        QuarantineLink* evictedTail = null;
        lock (_lock)
        {
            if (_tail == null) _head = link;
            else _tail->Next = link;
            _tail = link;
            _bytes += bytes;
            _count++;
            while (_bytes > MaxBytes && _head != null)
            {
                QuarantineLink* old = Unlink(null, _head);
                if (evictedTail == null) evicted = old;
                else evictedTail->Next = old;
                evictedTail = old;
            }
        }
        GiveBack(evicted);
    }

    /// <summary>Gives every held block back (quarantine_remove_cache for every cache).</summary>
    public void Flush() => Flush(owner: null);

    /// <summary>Gives back every block of <paramref name="owner"/> (every block for null) (quarantine_remove_cache).</summary>
    internal void Flush(nint? owner)
    {
        QuarantineLink* taken = null;
        QuarantineLink* takenTail = null;
        lock (_lock)
        {
            QuarantineLink* prev = null;
            QuarantineLink* q = _head;
            while (q != null)
            {
                QuarantineLink* next = q->Next;
                if (owner == null || q->Owner == owner.Value)
                {
                    Unlink(prev, q);
                    if (takenTail == null) taken = q;
                    else takenTail->Next = q;
                    takenTail = q;
                }
                else
                {
                    prev = q;
                }
                q = next;
            }
        }
        GiveBack(taken);
    }

    /// <summary>True when <paramref name="obj"/> waits in the quarantine (a linear walk: reports and tests only).</summary>
    internal bool Contains(void* obj)
    {
        lock (_lock)
        {
            for (QuarantineLink* q = _head; q != null; q = q->Next)
            {
                if (q->Object == (nint)obj) return true;
            }
        }
        return false;
    }

    private QuarantineLink* Unlink(QuarantineLink* prev, QuarantineLink* q)
    {
        if (prev == null) _head = q->Next;
        else prev->Next = q->Next;
        if (_tail == q) _tail = prev;
        _bytes -= q->Bytes;
        _count--;
        q->Next = null;
        return q;
    }

    /// <summary>Gives a chain of unlinked blocks back; every block is attempted, the first failure rethrown after.</summary>
    private void GiveBack(QuarantineLink* chain)
    {
        Exception? failure = null;
        while (chain != null)
        {
            QuarantineLink* next = chain->Next;
            try
            {
                Release?.Invoke(chain->Owner, chain->Object);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failure ??= e;
            }
            chain = next;
        }
        if (failure != null) throw failure;
    }
}
