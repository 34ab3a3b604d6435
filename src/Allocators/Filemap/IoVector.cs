using System.Buffers;
using System.Collections;
using System.Runtime.InteropServices;
using Allocators.Native;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Filemap;

/// <summary>
/// A reusable scatter/gather list of arena pages for one vectored call (preadv/pwritev): a run of consecutive file
/// pages goes to or from the disk in one system call, straight into the frames, with no bounce buffer. One per
/// thread, in native memory, so steady-state I/O allocates nothing. On Linux the calls go to libc directly; elsewhere
/// through <see cref="RandomAccess"/>'s vectored overloads.
/// </summary>
internal sealed unsafe class IoVector : IReadOnlyList<Memory<byte>>, IReadOnlyList<ReadOnlyMemory<byte>>
{
    /// <summary>Most pages in one call (1 MiB; IOV_MAX is 1024).</summary>
    public const int MaxPages = 256;

    private const int Eintr = 4;

    [ThreadStatic] private static IoVector? t_vector;

    private readonly Libc.IoVec* _iov = (Libc.IoVec*)NativeMemory.Alloc(MaxPages, (nuint)sizeof(Libc.IoVec));
    private PageMemory[]? _segments; // the portable path's Memory<byte> views, made on first use
    private int _count;

    /// <summary>The thread that used it is gone (its [ThreadStatic] reference went with it).</summary>
    ~IoVector() => NativeMemory.Free(_iov);

    /// <summary>The calling thread's vector, emptied.</summary>
    public static IoVector Rent()
    {
        IoVector vector = t_vector ??= new IoVector();
        vector._count = 0;
        return vector;
    }

    /// <summary>Appends <paramref name="length"/> bytes at <paramref name="address"/>.</summary>
    public void Add(byte* address, int length)
    {
        _iov[_count].Base = address;
        _iov[_count].Length = (nuint)length;
        _count++;
    }

    public int Count => _count;

    /// <summary>Reads the segments from <paramref name="offset"/>; returns the bytes read (short at end of file).</summary>
    /// <exception cref="IOException">The read failed.</exception>
    public long ReadFrom(SafeFileHandle file, long offset)
        => OperatingSystem.IsLinux() ? Transfer(file, offset, write: false) : RandomAccess.Read(file, (IReadOnlyList<Memory<byte>>)Portable(), offset);

    /// <summary>Writes every segment at <paramref name="offset"/>.</summary>
    /// <exception cref="IOException">The write failed (ENOSPC, EIO, EPERM, ...).</exception>
    public void WriteTo(SafeFileHandle file, long offset)
    {
        if (OperatingSystem.IsLinux()) Transfer(file, offset, write: true);
        else RandomAccess.Write(file, (IReadOnlyList<ReadOnlyMemory<byte>>)Portable(), offset);
    }

    /// <summary>
    /// preadv/pwritev until every segment is done, or a read meets end of file: a short transfer goes on from where it
    /// stopped, EINTR retries. Returns the bytes transferred.
    /// </summary>
    private long Transfer(SafeFileHandle file, long offset, bool write)
    {
        long total = 0;
        int first = 0;
        bool added = false;
        file.DangerousAddRef(ref added);
        try
        {
            int fd = (int)file.DangerousGetHandle();
            while (first < _count)
            {
                nint n = write
                    ? Libc.Pwritev(fd, _iov + first, _count - first, offset + total)
                    : Libc.Preadv(fd, _iov + first, _count - first, offset + total);
                if (n < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == Eintr) continue;
                    throw Error(write ? "pwritev" : "preadv", errno, offset + total);
                }
                if (n == 0 && !write) break; // end of file
                total += n;
                first = Advance(first, n);
            }
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
        return total;
    }

    /// <summary>Drops <paramref name="bytes"/> done from the front of the list; returns the new first segment.</summary>
    private int Advance(int first, nint bytes)
    {
        while (first < _count && bytes >= (nint)_iov[first].Length)
        {
            bytes -= (nint)_iov[first].Length;
            first++;
        }
        if (first < _count && bytes > 0)
        {
            _iov[first].Base = (byte*)_iov[first].Base + bytes;
            _iov[first].Length -= (nuint)bytes;
        }
        return first;
    }

    private static IOException Error(string call, int errno, long offset)
        => new($"{call} at offset {offset} failed: {Errno.Name(errno)} ({Errno.Message(errno)}).", errno | unchecked((int)0x80070000));

    private IoVector Portable()
    {
        _segments ??= CreateSegments();
        for (int i = 0; i < _count; i++) _segments[i].Set((byte*)_iov[i].Base, (int)_iov[i].Length);
        return this;
    }

    private static PageMemory[] CreateSegments()
    {
        var segments = new PageMemory[MaxPages];
        for (int i = 0; i < segments.Length; i++) segments[i] = new PageMemory();
        return segments;
    }

    Memory<byte> IReadOnlyList<Memory<byte>>.this[int index] => _segments![index].Memory;

    ReadOnlyMemory<byte> IReadOnlyList<ReadOnlyMemory<byte>>.this[int index] => _segments![index].Memory;

    IEnumerator<Memory<byte>> IEnumerable<Memory<byte>>.GetEnumerator()
    {
        for (int i = 0; i < _count; i++) yield return _segments![i].Memory;
    }

    IEnumerator<ReadOnlyMemory<byte>> IEnumerable<ReadOnlyMemory<byte>>.GetEnumerator()
    {
        for (int i = 0; i < _count; i++) yield return _segments![i].Memory;
    }

    IEnumerator IEnumerable.GetEnumerator() => ((IEnumerable<Memory<byte>>)this).GetEnumerator();

    /// <summary>A <see cref="Memory{T}"/> over a frame of the arena (never moves, so pinning is a no-op).</summary>
    private sealed class PageMemory : MemoryManager<byte>
    {
        private byte* _address;
        private int _length;

        public void Set(byte* address, int length)
        {
            _address = address;
            _length = length;
        }

        public override Span<byte> GetSpan() => new(_address, _length);

        public override MemoryHandle Pin(int elementIndex = 0) => new(_address + elementIndex);

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }
}
