using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Allocators.PageAlloc;
using Allocators.Slab;

namespace Allocators.Managed;

/// <summary>
/// An <see cref="IBufferWriter{T}"/> of bytes over native segments from kmalloc, read back as one
/// <see cref="ReadOnlySequence{T}"/> (<see cref="AsSequence"/>) without copying: the role RecyclableMemoryStream
/// plays for arrays. <see cref="Dispose"/> (or <see cref="Reset"/>) frees every segment.
/// </summary>
/// <remarks>
/// <para>Segments are <see cref="SegmentSize"/> bytes (4 KiB by default: kmalloc-4k), or one larger segment for a
/// bigger size hint, up to 4 MiB; the unwritten tail of a segment is skipped when the next request does not fit it.
/// Segment nodes and their owners are reused, so a writer in steady use allocates no managed bytes after its own.</para>
/// <para>Like a stream, one thread writes at a time; <see cref="Dispose"/> may run on any thread. Every call after
/// <see cref="Dispose"/>, a second <see cref="Dispose"/> among them, throws <see cref="ObjectDisposedException"/> and
/// changes nothing; reading a sequence taken before the dispose throws it too, until its segments are reused (never
/// with <see cref="SlabAllocatorOptions.TrackOwnerLeaks"/>, which also reports a writer dropped without dispose).</para>
/// </remarks>
public sealed unsafe class NativeBufferWriter : IBufferWriter<byte>, IDisposable
{
    /// <summary>The default segment size: one kmalloc-4k object.</summary>
    public const int DefaultSegmentSize = 4096;

    private static readonly ContextPool<NativeSequenceSegment> s_segments = new();

    private readonly SlabAllocator _slab;
    private readonly OwnerLeakTracker? _tracker;
    private NativeSequenceSegment? _first;
    private NativeSequenceSegment? _last;
    private long _finished;  // bytes in the segments before _last
    private int _segments;
    private int _disposed;

    /// <summary>A writer whose segments come from <paramref name="slab"/>'s kmalloc, <paramref name="segmentSize"/> bytes each.</summary>
    public NativeBufferWriter(SlabAllocator slab, int segmentSize = DefaultSegmentSize)
    {
        ArgumentNullException.ThrowIfNull(slab);
        if (segmentSize <= 0 || (nuint)segmentSize > SlabAllocator.KmallocMaxSize)
            throw new ArgumentOutOfRangeException(nameof(segmentSize), segmentSize, $"A segment holds 1 to {SlabAllocator.KmallocMaxSize} bytes.");
        _slab = slab;
        SegmentSize = segmentSize;
        if (slab.Options.TrackOwnerLeaks)
            _tracker = new OwnerLeakTracker(slab, this, slab.KmallocCache((nuint)segmentSize)?.Name ?? "kmalloc");
    }

    /// <summary>Bytes of each segment.</summary>
    public int SegmentSize { get; }

    /// <summary>Bytes written so far.</summary>
    public long WrittenCount => _finished + (_last?.Written ?? 0);

    /// <summary>Segments held.</summary>
    public int SegmentCount => _segments;

    /// <summary>The first segment's address (0 when there is none), for reports.</summary>
    internal nuint FirstSegmentAddress => _first?.Owner.Address ?? 0;

    /// <inheritdoc/>
    public Span<byte> GetSpan(int sizeHint = 0)
    {
        NativeSequenceSegment segment = Room(sizeHint);
        return segment.Owner.Span[segment.Written..];
    }

    /// <inheritdoc/>
    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        NativeSequenceSegment segment = Room(sizeHint);
        return segment.Owner.Memory[segment.Written..];
    }

    /// <summary>Marks <paramref name="count"/> more bytes of the last span or memory handed out as written.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or more than that span holds.</exception>
    public void Advance(int count)
    {
        ThrowIfDisposed();
        NativeSequenceSegment? last = _last;
        int free = last?.Free ?? 0;
        if ((uint)count > (uint)free)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"{nameof(NativeBufferWriter)}: cannot advance {count} bytes; the last span holds {free}.");
        if (last != null) last.Written += count;
    }

    /// <summary>Appends <paramref name="data"/>, across segments as needed.</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        ThrowIfDisposed();
        while (!data.IsEmpty)
        {
            Span<byte> room = GetSpan();
            int n = Math.Min(room.Length, data.Length);
            data[..n].CopyTo(room);
            _last!.Written += n;
            data = data[n..];
        }
    }

    /// <summary>What is written so far, over the segments themselves (valid until <see cref="Reset"/> or <see cref="Dispose"/>).</summary>
    public ReadOnlySequence<byte> AsSequence()
    {
        ThrowIfDisposed();
        NativeSequenceSegment? last = _last;
        if (last == null || WrittenCount == 0) return ReadOnlySequence<byte>.Empty;
        last.Publish();
        return new ReadOnlySequence<byte>(_first!, 0, last, last.Written);
    }

    /// <summary>Frees every segment; the writer starts again empty.</summary>
    public void Reset()
    {
        ThrowIfDisposed();
        ReleaseSegments();
    }

    /// <summary>Frees every segment. A second call throws <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) ThrowDisposed();
        ReleaseSegments();
        _tracker?.Disarm();
    }

    /// <summary>The last segment when it has room for <paramref name="sizeHint"/> bytes (at least one), else a new one that has.</summary>
    private NativeSequenceSegment Room(int sizeHint)
    {
        ThrowIfDisposed();
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        int need = Math.Max(sizeHint, 1);
        NativeSequenceSegment? last = _last;
        if (last != null && last.Free >= need) return last;
        if ((nuint)need > SlabAllocator.KmallocMaxSize)
            throw new ArgumentOutOfRangeException(nameof(sizeHint), sizeHint, $"{nameof(NativeBufferWriter)}: a segment holds at most {SlabAllocator.KmallocMaxSize} bytes.");
        return Grow(Math.Max(need, SegmentSize));
    }

    /// <summary>Appends a segment of <paramref name="size"/> bytes (or gives an unwritten last one that buffer instead).</summary>
    private NativeSequenceSegment Grow(int size)
    {
        SlabMemoryOwner owner = SlabMemoryOwner.Rent(_slab, size, Gfp.Kernel, inner: true);
        NativeSequenceSegment? last = _last;
        if (last != null && last.Written == 0)
        {
            // Nothing was written to it: no empty segment is left in the chain.
            last.Replace(owner);
            return last;
        }
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        NativeSequenceSegment segment = (_tracker == null ? s_segments.Take(ctx) : null) ?? new NativeSequenceSegment();
        if (last != null)
        {
            last.Publish();
            _finished += last.Written;
        }
        segment.Start(owner, last);
        _first ??= segment;
        _last = segment;
        _segments++;
        return segment;
    }

    private void ReleaseSegments()
    {
        SlabThreadContext* ctx = SlabCpus.GetOrCreateCurrent();
        for (NativeSequenceSegment? s = _first; s != null;)
        {
            NativeSequenceSegment? next = s.Release();
            Recycle(ctx, s);
            s = next;
        }
        _first = _last = null;
        _finished = 0;
        _segments = 0;
    }

    private void Recycle(SlabThreadContext* ctx, NativeSequenceSegment segment)
    {
        if (_tracker == null) s_segments.Give(ctx, segment);
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowDisposed();
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposed()
        => throw new ObjectDisposedException(nameof(NativeBufferWriter), $"{nameof(NativeBufferWriter)} (segments of {SegmentSize} bytes) is already disposed.");
}
