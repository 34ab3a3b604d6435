using System.Runtime.InteropServices;

namespace Allocators.Kasan;

/// <summary>
/// A quarantined block's link, kept in the freed memory itself (the kernel's <c>qlist_node</c>). While the block waits,
/// <see cref="Object"/> is the block's own address and <see cref="Owner"/> its cache; both are cleared when it leaves,
/// so an inspector reading a slot can tell a quarantined object from a live one (<c>allocators inspect</c> reads this
/// layout: changing it, or that rule, changes the native registry's layout version).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct QuarantineLink
{
    public QuarantineLink* Next;
    public nint Owner;            // who gives the block back: a slab cache's native record, 0 for a large kmalloc
    public nint Object;           // the pointer that was freed
    public long Bytes;            // what it counts against the quarantine's limit
}

/// <summary>
/// A FIFO of quarantined blocks with its byte and block counts (the kernel's <c>qlist_head</c>). Not synchronised: the
/// owner of the list (one thread, or the holder of the global queue's lock) is its only writer.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct QuarantineList
{
    public QuarantineLink* Head;
    public QuarantineLink* Tail;
    public long Bytes;
    public long Count;

    /// <summary>Appends one block (qlist_put).</summary>
    public void Put(QuarantineLink* link)
    {
        link->Next = null;
        if (Tail == null) Head = link;
        else Tail->Next = link;
        Tail = link;
        Volatile.Write(ref Bytes, Bytes + link->Bytes);
        Volatile.Write(ref Count, Count + 1);
    }

    /// <summary>Appends all of <paramref name="from"/> as one batch and leaves it empty (qlist_move_all).</summary>
    public void MoveAllFrom(ref QuarantineList from)
    {
        if (from.Head == null) return;
        if (Tail == null) Head = from.Head;
        else Tail->Next = from.Head;
        Tail = from.Tail;
        Volatile.Write(ref Bytes, Bytes + from.Bytes);
        Volatile.Write(ref Count, Count + from.Count);
        from = default;
    }

    /// <summary>Takes the oldest block off the list; null when empty.</summary>
    public QuarantineLink* TakeFirst()
    {
        QuarantineLink* q = Head;
        if (q == null) return null;
        Unlink(null, q);
        return q;
    }

    /// <summary>Moves the blocks of <paramref name="owner"/> (every block for null) to <paramref name="into"/> (qlist_move_cache).</summary>
    public void MoveOwner(nint? owner, ref QuarantineList into)
    {
        if (owner == null)
        {
            into.MoveAllFrom(ref this);
            return;
        }
        QuarantineLink* prev = null;
        QuarantineLink* q = Head;
        while (q != null)
        {
            QuarantineLink* next = q->Next;
            if (q->Owner == owner.Value)
            {
                Unlink(prev, q);
                into.Put(q);
            }
            else
            {
                prev = q;
            }
            q = next;
        }
    }

    /// <summary>True when the block freed at <paramref name="obj"/> is on the list (a linear walk).</summary>
    public readonly bool Contains(nint obj)
    {
        for (QuarantineLink* q = Head; q != null; q = q->Next)
        {
            if (q->Object == obj) return true;
        }
        return false;
    }

    private void Unlink(QuarantineLink* prev, QuarantineLink* q)
    {
        if (prev == null) Head = q->Next;
        else prev->Next = q->Next;
        if (Tail == q) Tail = prev;
        Volatile.Write(ref Bytes, Bytes - q->Bytes);
        Volatile.Write(ref Count, Count - 1);
        q->Next = null;
    }
}
