using System.Runtime.CompilerServices;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>
/// Managed wrapper objects kept for reuse: a small stack per slab thread context, found by the context's id (the rent
/// or free looked the context up anyway, so the stack costs no second thread-local read and no atomic), and a shared
/// depot of slots that one thread's surplus goes to and another thread's shortage takes from, for owners rented on
/// one thread and disposed on another.
/// </summary>
/// <remarks>
/// Only the thread using a context touches its stack: a context serves one live thread at a time (a new thread
/// adopts an exited one's, stack and all). Depot slots change hands with one exchange each, never through a linked
/// list, so an object that is taken and given back meanwhile cannot confuse another thread (no ABA). A full pool
/// drops what it is given.
/// </remarks>
internal sealed unsafe class ContextPool<T> where T : class
{
    private const int StackCapacity = 32;
    private const int DepotSlots = 256;
    private const int DepotProbes = 8;

    private readonly Lock _lock = new();
    private readonly T?[] _depot = new T?[DepotSlots];
    private Stack?[] _stacks = new Stack?[64];
    private int _depotHint; // about how many depot slots are full; read and written racily, only ever a hint

    /// <summary>An object for the thread of <paramref name="ctx"/>, or null when the pool has none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T? Take(SlabThreadContext* ctx)
    {
        Stack?[] stacks = _stacks;
        int id = ctx->Id;
        if ((uint)id < (uint)stacks.Length && stacks[id] is { } stack)
        {
            int n = stack.Count - 1;
            if (n >= 0)
            {
                stack.Count = n;
                return stack.Items[n].Item;
            }
        }
        return TakeFromDepot();
    }

    /// <summary>Keeps <paramref name="item"/> (which nobody uses any more) for the thread of <paramref name="ctx"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Give(SlabThreadContext* ctx, T item)
    {
        Stack?[] stacks = _stacks;
        int id = ctx->Id;
        if ((uint)id < (uint)stacks.Length && stacks[id] is { } stack && stack.Count < StackCapacity)
        {
            stack.Items[stack.Count++].Item = item;
            return;
        }
        GiveSlow(id, item);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GiveSlow(int id, T item)
    {
        Stack stack = StackOf(id);
        if (stack.Count < StackCapacity)
        {
            stack.Items[stack.Count++].Item = item;
            return;
        }
        int start = Volatile.Read(ref _depotHint);
        for (int i = 0; i < DepotProbes; i++)
        {
            int slot = (start + i) & (DepotSlots - 1);
            if (Volatile.Read(ref _depot[slot]) == null && Interlocked.CompareExchange(ref _depot[slot], item, null) == null)
            {
                Volatile.Write(ref _depotHint, slot + 1);
                return;
            }
        }
        // Nothing free above the hint: move it down past the probed slots, or a hint stuck between a full run above
        // and an empty run below would make every later give drop and every take miss.
        Volatile.Write(ref _depotHint, start - DepotProbes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private T? TakeFromDepot()
    {
        int start = Volatile.Read(ref _depotHint) - 1;
        for (int i = 0; i < DepotProbes; i++)
        {
            int slot = (start - i) & (DepotSlots - 1);
            if (Volatile.Read(ref _depot[slot]) != null && Interlocked.Exchange(ref _depot[slot], null) is { } item)
            {
                Volatile.Write(ref _depotHint, slot);
                return item;
            }
        }
        // Nothing below the hint: move it up past the probed slots (see GiveSlow).
        Volatile.Write(ref _depotHint, start + 1 + DepotProbes);
        return null;
    }

    /// <summary>The stack of context <paramref name="id"/>, made (and the table grown) on first use.</summary>
    private Stack StackOf(int id)
    {
        lock (_lock)
        {
            Stack?[] stacks = _stacks;
            if (id >= stacks.Length)
            {
                var grown = new Stack?[Math.Max(id + 1, stacks.Length * 2)];
                stacks.CopyTo(grown, 0);
                stacks = grown;
                Volatile.Write(ref _stacks, grown);
            }
            return stacks[id] ??= new Stack();
        }
    }

    /// <summary>Objects kept in the stacks and the depot (tests).</summary>
    internal int Count
    {
        get
        {
            int count = 0;
            foreach (Stack? stack in Volatile.Read(ref _stacks)) count += stack?.Count ?? 0;
            foreach (T? item in _depot) count += item != null ? 1 : 0;
            return count;
        }
    }

    private sealed class Stack
    {
        // Struct slots: storing into a field of an element needs no array covariance check (an object array of a
        // shared generic type would call a helper for every store).
        public readonly Slot[] Items = new Slot[StackCapacity];
        public int Count;
    }

    private struct Slot
    {
        public T? Item;
    }
}
