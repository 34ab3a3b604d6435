using System.Buffers;

namespace Allocators.Managed;

/// <summary>
/// One segment of a <see cref="NativeBufferWriter"/>'s sequence: a <see cref="SlabMemoryOwner"/> and how much of it is
/// written. The node is reused by later writers once its writer lets it go (with a fresh owner each time).
/// </summary>
internal sealed class NativeSequenceSegment : ReadOnlySequenceSegment<byte>
{
    private SlabMemoryOwner? _owner;

    /// <summary>The segment's buffer.</summary>
    public SlabMemoryOwner Owner => _owner!;

    /// <summary>Bytes written into <see cref="Owner"/>.</summary>
    public int Written;

    /// <summary>Bytes still free.</summary>
    public int Free => _owner!.Length - Written;

    /// <summary>Makes this the segment after <paramref name="previous"/> (or the first), over <paramref name="owner"/>.</summary>
    public void Start(SlabMemoryOwner owner, NativeSequenceSegment? previous)
    {
        _owner = owner;
        Written = 0;
        Memory = default;
        Next = null;
        RunningIndex = previous is null ? 0 : previous.RunningIndex + previous.Written;
        if (previous is not null) previous.Next = this;
    }

    /// <summary>Swaps the buffer of a segment nothing was written to for <paramref name="owner"/>, freeing the old one.</summary>
    public void Replace(SlabMemoryOwner owner)
    {
        SlabMemoryOwner old = _owner!;
        _owner = owner;
        Memory = default;
        old.Dispose();
    }

    /// <summary>Shows what is written as the segment's <see cref="ReadOnlySequenceSegment{T}.Memory"/> (it only grows while the segment lives).</summary>
    public void Publish() => Memory = _owner!.Memory[..Written];

    /// <summary>
    /// Frees the buffer; the node is then free for reuse. Its memory and link stay until then, so a sequence taken
    /// earlier fails on the disposed owner (<see cref="ObjectDisposedException"/>) rather than on a broken chain.
    /// </summary>
    public NativeSequenceSegment? Release()
    {
        SlabMemoryOwner owner = _owner!;
        _owner = null;
        owner.Dispose();
        return (NativeSequenceSegment?)Next;
    }
}
