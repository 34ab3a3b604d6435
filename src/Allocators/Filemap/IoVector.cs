using System.Buffers;
using System.Collections;
using Allocators.Physical;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Filemap;

/// <summary>
/// A reusable scatter/gather list of arena pages for one vectored <see cref="RandomAccess"/> call (preadv/pwritev):
/// a run of consecutive file pages goes to or from the disk in one system call, straight into the frames, with no
/// bounce buffer. One per thread, so steady-state I/O allocates nothing.
/// </summary>
internal sealed unsafe class IoVector : IReadOnlyList<Memory<byte>>, IReadOnlyList<ReadOnlyMemory<byte>>
{
    /// <summary>Most pages in one call (1 MiB).</summary>
    public const int MaxPages = 256;

    [ThreadStatic] private static IoVector? t_vector;

    private readonly PageMemory[] _segments = new PageMemory[MaxPages];
    private int _count;

    private IoVector()
    {
        for (int i = 0; i < _segments.Length; i++) _segments[i] = new PageMemory();
    }

    /// <summary>The calling thread's vector, emptied.</summary>
    public static IoVector Rent()
    {
        IoVector vector = t_vector ??= new IoVector();
        vector._count = 0;
        return vector;
    }

    /// <summary>Appends <paramref name="length"/> bytes at <paramref name="address"/>.</summary>
    public void Add(byte* address, int length) => _segments[_count++].Set(address, length);

    public int Count => _count;

    /// <summary>Reads the segments from <paramref name="offset"/>; returns the bytes read (short at end of file).</summary>
    public long ReadFrom(SafeFileHandle file, long offset) => RandomAccess.Read(file, (IReadOnlyList<Memory<byte>>)this, offset);

    /// <summary>Writes the segments at <paramref name="offset"/>.</summary>
    public void WriteTo(SafeFileHandle file, long offset) => RandomAccess.Write(file, (IReadOnlyList<ReadOnlyMemory<byte>>)this, offset);

    Memory<byte> IReadOnlyList<Memory<byte>>.this[int index] => _segments[index].Memory;

    ReadOnlyMemory<byte> IReadOnlyList<ReadOnlyMemory<byte>>.this[int index] => _segments[index].Memory;

    IEnumerator<Memory<byte>> IEnumerable<Memory<byte>>.GetEnumerator()
    {
        for (int i = 0; i < _count; i++) yield return _segments[i].Memory;
    }

    IEnumerator<ReadOnlyMemory<byte>> IEnumerable<ReadOnlyMemory<byte>>.GetEnumerator()
    {
        for (int i = 0; i < _count; i++) yield return _segments[i].Memory;
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
