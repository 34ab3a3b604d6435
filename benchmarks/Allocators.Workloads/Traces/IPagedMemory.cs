namespace Allocators.Workloads.Traces;

/// <summary>
/// Something a page-access trace can be replayed through: a simulated replacement policy, the whole memory system
/// with reclaim and swap, or the host's page cache. Frames are fixed by the implementation; pages are numbered from 0.
/// </summary>
internal interface IPagedMemory
{
    /// <summary>Name in the table ("LRU", "MIN", "allocators", ...).</summary>
    string Name { get; }

    /// <summary>Major faults so far: touches of a page that was not resident (cold misses included).</summary>
    long MajorFaults { get; }

    /// <summary>Reads (or, with <paramref name="write"/>, writes) <paramref name="page"/>, faulting it in when not resident.</summary>
    void Touch(int page, bool write);

    /// <summary>Pages written out to make room (swap-outs); 0 for memories that do not write.</summary>
    long PagesOut => 0;
}
