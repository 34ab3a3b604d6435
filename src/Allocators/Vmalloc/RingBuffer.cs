using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Vmalloc;

/// <summary>
/// A single-producer, single-consumer byte ring over pages mapped twice back to back (<see cref="VmallocAllocator.VmapRing"/>):
/// a record that crosses the end of the ring is written and read as one contiguous range, never split.
/// Records are length-prefixed (4 bytes). With the memfd arena the ring is also one contiguous host span.
/// </summary>
/// <remarks>One writer thread and one reader thread may use it concurrently.</remarks>
public sealed unsafe class RingBuffer : IDisposable
{
    private readonly VmallocAllocator _vmalloc;
    private readonly nint[] _pages;
    private readonly ulong _address;
    private long _head; // total bytes written
    private long _tail; // total bytes consumed

    /// <summary>Creates a ring of <paramref name="pages"/> pages (a power of two).</summary>
    public RingBuffer(VmallocAllocator vmalloc, int pages)
    {
        ArgumentNullException.ThrowIfNull(vmalloc);
        if (pages <= 0 || (pages & (pages - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(pages), "A power of two.");
        _vmalloc = vmalloc;
        _pages = new nint[pages];
        var allocator = vmalloc.Kernel.Pages;
        for (int i = 0; i < pages; i++)
        {
            PageFrame* page = allocator.AllocPages(Gfp.Kernel | Gfp.Zero, 0);
            if (page == null)
            {
                for (int j = 0; j < i; j++) allocator.FreePages((PageFrame*)_pages[j], 0);
                throw new OutOfMemoryException("RingBuffer: no memory for its pages.");
            }
            _pages[i] = (nint)page;
        }
        _address = vmalloc.VmapRing(_pages);
        if (_address == 0)
        {
            foreach (nint p in _pages) allocator.FreePages((PageFrame*)p, 0);
            throw new OutOfMemoryException("RingBuffer: no vmalloc space.");
        }
        Capacity = pages * PageFrame.PageSize;
    }

    /// <summary>Bytes the ring holds.</summary>
    public int Capacity { get; }

    /// <summary>Kernel address of the first copy.</summary>
    public ulong Address => _address;

    /// <summary>Bytes written and not yet read.</summary>
    public int Used => (int)(Volatile.Read(ref _head) - Volatile.Read(ref _tail));

    /// <summary>Appends a record; false when it does not fit now.</summary>
    public bool TryWrite(ReadOnlySpan<byte> record)
    {
        int needed = record.Length + 4;
        if (needed > Capacity) throw new ArgumentException($"A record of {record.Length} bytes cannot fit a {Capacity}-byte ring.", nameof(record));
        long head = _head;
        if (head + needed - Volatile.Read(ref _tail) > Capacity) return false;
        ulong at = _address + (ulong)(head & (Capacity - 1));
        _vmalloc.Kernel.Write(at, record.Length);
        _vmalloc.Kernel.WriteBytes(at + 4, record); // may run into the second copy: no wrap handling needed
        Volatile.Write(ref _head, head + needed);
        return true;
    }

    /// <summary>Reads the next record into a new array, or null when the ring is empty.</summary>
    public byte[]? TryRead()
    {
        long tail = _tail;
        if (Volatile.Read(ref _head) == tail) return null;
        ulong at = _address + (ulong)(tail & (Capacity - 1));
        int length = _vmalloc.Kernel.Read<int>(at);
        var record = new byte[length];
        _vmalloc.Kernel.ReadBytes(at + 4, record);
        Volatile.Write(ref _tail, tail + length + 4);
        return record;
    }

    /// <summary>The bytes of the next record in place, as one contiguous span over the host mapping (memfd arena), or empty.</summary>
    public ReadOnlySpan<byte> PeekContiguous()
    {
        long tail = _tail;
        if (Volatile.Read(ref _head) == tail) return default;
        byte* p = _vmalloc.HostPointer(_address);
        if (p == null) throw new InvalidOperationException("RingBuffer: no host mapping (needs ArenaBacking.MemFd).");
        byte* at = p + (tail & (Capacity - 1));
        return new ReadOnlySpan<byte>(at + 4, *(int*)at);
    }

    /// <summary>Unmaps the ring and frees its pages.</summary>
    public void Dispose()
    {
        _vmalloc.Vunmap(_address);
        foreach (nint p in _pages) _vmalloc.Kernel.Pages.FreePages((PageFrame*)p, 0);
    }
}
