using System.Runtime.CompilerServices;

namespace Allocators.Buffers;

/// <summary>
/// The pool's owners by id. Thread caches and depots live in native memory and cannot hold managed references, so
/// they hold ids; finding the owner is one array load. Ids of evicted owners are reused.
/// </summary>
internal sealed class PoolOwnerTable
{
    private readonly Lock _lock = new();
    private NativeMemoryOwner?[] _owners = new NativeMemoryOwner?[64];
    private int[] _freeIds = new int[16];
    private int _freeCount;
    private int _used;

    /// <summary>The owner with <paramref name="id"/>; the caller got the id from a cache or depot, so it is live.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public NativeMemoryOwner Get(int id) => Volatile.Read(ref _owners)[id]!;

    /// <summary>Gives <paramref name="owner"/> an id.</summary>
    public int Add(NativeMemoryOwner owner)
    {
        lock (_lock)
        {
            int id;
            if (_freeCount > 0) id = _freeIds[--_freeCount];
            else
            {
                id = _used++;
                if (id == _owners.Length)
                {
                    var grown = new NativeMemoryOwner?[_owners.Length * 2];
                    _owners.CopyTo(grown, 0);
                    // Published whole: a reader sees the old array (where every id it can hold is filled) or the new one.
                    Volatile.Write(ref _owners, grown);
                }
            }
            _owners[id] = owner;
            return id;
        }
    }

    /// <summary>Puts <paramref name="owner"/> in the place of the owner with the same id (a debug pool's fresh owner per rent).</summary>
    public void Replace(int id, NativeMemoryOwner owner)
    {
        lock (_lock) _owners[id] = owner;
    }

    /// <summary>Lets go of the owner with <paramref name="id"/>; the id may be given out again.</summary>
    public void Remove(int id)
    {
        lock (_lock)
        {
            _owners[id] = null;
            if (_freeCount == _freeIds.Length) Array.Resize(ref _freeIds, _freeIds.Length * 2);
            _freeIds[_freeCount++] = id;
        }
    }
}
