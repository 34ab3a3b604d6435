namespace Allocators.Collections;

/// <summary>
/// i_mmap for one shared object (a file's page cache, a shmem object): the address spaces that map it, each with how
/// many of its areas do. Copy-on-write, so that rmap walks (reclaim, writeback, truncation) iterate a snapshot without
/// a lock while they call into page tables; linking and unlinking, done when areas come and go, take the lock.
/// </summary>
internal sealed class MapperList<T> where T : class
{
    private readonly Lock _lock = new();
    private (T Mapper, int Areas)[] _mappers = [];

    /// <summary>The mappers as of the call, with their area counts.</summary>
    public (T Mapper, int Areas)[] Snapshot => Volatile.Read(ref _mappers);

    /// <summary>True while some area maps the object.</summary>
    public bool Any => Snapshot.Length != 0;

    /// <summary>Areas mapping the object (i_mmap's size).</summary>
    public int Areas
    {
        get
        {
            int n = 0;
            foreach (var (_, areas) in Snapshot) n += areas;
            return n;
        }
    }

    /// <summary>One more area of <paramref name="mapper"/> (vma_link).</summary>
    public void Link(T mapper)
    {
        lock (_lock)
        {
            var list = _mappers;
            for (int i = 0; i < list.Length; i++)
            {
                if (!ReferenceEquals(list[i].Mapper, mapper)) continue;
                var copy = ((T, int)[])list.Clone();
                copy[i].Item2++;
                Volatile.Write(ref _mappers, copy);
                return;
            }
            Volatile.Write(ref _mappers, [.. list, (mapper, 1)]);
        }
    }

    /// <summary>One area of <paramref name="mapper"/> fewer; false when it had none.</summary>
    public bool Unlink(T mapper)
    {
        lock (_lock)
        {
            var list = _mappers;
            for (int i = 0; i < list.Length; i++)
            {
                if (!ReferenceEquals(list[i].Mapper, mapper)) continue;
                if (list[i].Areas > 1)
                {
                    var copy = ((T, int)[])list.Clone();
                    copy[i].Item2--;
                    Volatile.Write(ref _mappers, copy);
                }
                else
                {
                    Volatile.Write(ref _mappers, [.. list[..i], .. list[(i + 1)..]]);
                }
                return true;
            }
            return false;
        }
    }
}
