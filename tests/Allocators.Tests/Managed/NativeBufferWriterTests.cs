using System.Buffers;
using Allocators.Managed;
using CsCheck;
using static Allocators.Tests.Managed.ManagedTestSupport;

namespace Allocators.Tests.Managed;

/// <summary>
/// <see cref="NativeBufferWriter"/>: random runs of Write, GetSpan/GetMemory with size hints and partial Advance read
/// back byte for byte through <see cref="NativeBufferWriter.AsSequence"/>; misuse throws with the writer unchanged;
/// everything goes back to the slab on Dispose and Reset; a reused writer allocates no managed bytes.
/// </summary>
public class NativeBufferWriterTests
{
    /// <summary>One step: write <c>Length</c> bytes, through Write (0), GetSpan (1) or GetMemory (2), asking for <c>Hint</c>.</summary>
    private readonly record struct Step(int How, int Length, int Hint);

    private static readonly Gen<Step> StepGen = Gen.Select(Gen.Int[0, 2], Gen.Frequency(
        (4, Gen.Int[0, 300]), (2, Gen.Int[300, 5000]), (1, Gen.Int[5000, 40_000])), Gen.Int[0, 3],
        (how, length, hintKind) => new Step(how, length, hintKind switch { 0 => 0, 1 => 1, 2 => length, _ => length + 17 }));

    private static void Apply(NativeBufferWriter writer, Step step, List<byte> expected)
    {
        int seed = expected.Count;
        var data = new byte[step.Length];
        Fill(data, seed);
        if (step.How == 0)
        {
            writer.Write(data);
            expected.AddRange(data);
            return;
        }
        // The span may be shorter than asked for a hint of 0 or 1: write what fits, as a serializer would.
        int done = 0;
        do
        {
            Span<byte> span = step.How == 1 ? writer.GetSpan(step.Hint) : writer.GetMemory(step.Hint).Span;
            Assert.True(span.Length >= Math.Max(1, step.Hint), $"asked for {step.Hint}, got {span.Length}");
            int n = Math.Min(span.Length, step.Length - done);
            data.AsSpan(done, n).CopyTo(span);
            writer.Advance(n);
            done += n;
        } while (done < step.Length);
        expected.AddRange(data);
    }

    [Fact]
    public void RandomWritesReadBackThroughTheSequence()
    {
        using var sys = NewSystem(mebibytes: 64);
        Gen.Select(StepGen.List[0, 40], Gen.Int[1, 3]).Sample((steps, segmentKind) =>
        {
            int segmentSize = segmentKind switch { 1 => 64, 2 => 1000, _ => NativeBufferWriter.DefaultSegmentSize };
            using var writer = new NativeBufferWriter(sys.Slab, segmentSize);
            var expected = new List<byte>();
            foreach (Step step in steps) Apply(writer, step, expected);
            ReadOnlySequence<byte> sequence = writer.AsSequence();
            Assert.Equal(expected.Count, writer.WrittenCount);
            Assert.Equal(expected.Count, sequence.Length);
            Assert.True(expected.ToArray().AsSpan().SequenceEqual(sequence.ToArray()));
            // No empty segment before the last (that one may be a span handed out but not advanced); slices cross segments.
            var segments = new List<ReadOnlyMemory<byte>>();
            foreach (ReadOnlyMemory<byte> segment in sequence) segments.Add(segment);
            Assert.All(segments.SkipLast(1), segment => Assert.False(segment.IsEmpty));
            if (expected.Count > 2)
            {
                int start = expected.Count / 3;
                Assert.True(expected.GetRange(start, expected.Count / 3).ToArray().AsSpan()
                    .SequenceEqual(sequence.Slice(start, expected.Count / 3).ToArray()));
            }
        }, iter: 200);
        AssertNoKmallocLive(sys.Slab);
    }

    [Fact]
    public void ResetFreesEverySegmentAndTheWriterGoesOn()
    {
        using var sys = NewSystem();
        using var writer = new NativeBufferWriter(sys.Slab);
        writer.Write(new byte[10_000]);
        Assert.Equal(3, writer.SegmentCount);
        writer.Reset();
        Assert.Equal(0, writer.WrittenCount);
        Assert.Equal(0, writer.SegmentCount);
        Assert.True(writer.AsSequence().IsEmpty);
        AssertNoKmallocLive(sys.Slab);
        writer.Write([1, 2, 3]);
        Assert.Equal(new byte[] { 1, 2, 3 }, writer.AsSequence().ToArray());
    }

    [Fact]
    public void MisuseThrowsAndChangesNothing()
    {
        using var sys = NewSystem();
        Assert.Throws<ArgumentNullException>(() => new NativeBufferWriter(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeBufferWriter(sys.Slab, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeBufferWriter(sys.Slab, (4 << 20) + 1));
        var writer = new NativeBufferWriter(sys.Slab, 100);
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(1)); // nothing handed out yet
        Span<byte> span = writer.GetSpan(10);
        span[0] = 42;
        int length = span.Length;
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(length + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.GetSpan(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.GetMemory((4 << 20) + 1));
        Assert.Equal(0, writer.WrittenCount);
        writer.Advance(1);
        Assert.Equal(new byte[] { 42 }, writer.AsSequence().ToArray());

        ReadOnlySequence<byte> kept = writer.AsSequence();
        writer.Dispose();
        var ex = Assert.Throws<ObjectDisposedException>(writer.Dispose);
        Assert.Contains("already disposed", ex.Message);
        Assert.Throws<ObjectDisposedException>(() => writer.GetSpan());
        Assert.Throws<ObjectDisposedException>(() => writer.Write([1]));
        Assert.Throws<ObjectDisposedException>(() => writer.AsSequence());
        Assert.Throws<ObjectDisposedException>(writer.Reset);
        // A sequence taken before the dispose does not read freed memory.
        Assert.Throws<ObjectDisposedException>(() => kept.First.Span[0]);
        AssertNoKmallocLive(sys.Slab);
    }

    [Fact]
    public void AReusedWriterAllocatesNoManagedBytes()
    {
        using var sys = NewUncheckedSystem();
        using var writer = new NativeBufferWriter(sys.Slab);
        byte[] chunk = new byte[1000];
        long sum = 0;
        void Body()
        {
            for (int round = 0; round < 200; round++)
            {
                for (int i = 0; i < 64; i++) writer.Write(chunk);
                Span<byte> span = writer.GetSpan(5000);
                writer.Advance(span.Length);
                foreach (ReadOnlyMemory<byte> segment in writer.AsSequence()) sum += segment.Span[0];
                writer.Reset();
            }
        }
        Body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Body();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
