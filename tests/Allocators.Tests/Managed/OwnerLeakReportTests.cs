using System.Runtime.CompilerServices;
using Allocators.Managed;
using Allocators.Slab;
using static Allocators.Tests.Managed.ManagedTestSupport;

namespace Allocators.Tests.Managed;

/// <summary>
/// <see cref="SlabAllocatorOptions.TrackOwnerLeaks"/>: an owner or writer dropped without Dispose is reported through
/// <see cref="SlabAllocator.CorruptionDetected"/> with its allocation site once the GC finds it; disposed ones are
/// not; with tracking on, owners are not reused, so a stale reference is refused even after later rents.
/// </summary>
[Collection(nameof(OwnerLeakReportTests))] // finalizers of other tests' owners must not run into these handlers
public class OwnerLeakReportTests
{
    private static List<SlabReport> Collect(SlabAllocator slab, Action drop)
    {
        var reports = new List<SlabReport>();
        slab.CorruptionDetected += r => { lock (reports) reports.Add(r); };
        drop();
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        lock (reports) return reports.ToList();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static nuint LeakAnOwner(SlabAllocator slab)
    {
        SlabMemoryOwner owner = slab.RentMemory(100);
        owner.Span.Fill(1);
        return owner.Address;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void LeakAWriter(SlabAllocator slab)
    {
        var writer = new NativeBufferWriter(slab);
        writer.Write(new byte[5000]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void DisposeProperly(SlabAllocator slab)
    {
        slab.RentMemory(64).Dispose();
        using var writer = new NativeBufferWriter(slab);
        writer.Write([1, 2, 3]);
    }

    [Fact]
    public void AnOwnerDroppedWithoutDisposeIsReportedWithItsAllocationSite()
    {
        using var sys = NewSystem(trackOwnerLeaks: true);
        nuint address = 0;
        List<SlabReport> reports = Collect(sys.Slab, () => address = LeakAnOwner(sys.Slab));
        SlabReport report = Assert.Single(reports);
        Assert.Equal("kmalloc-128", report.Cache);
        Assert.Equal("Owner dropped without Dispose", report.Problem);
        Assert.Equal(address, report.Address);
        Assert.Contains($"{nameof(OwnerLeakReportTests)}.{nameof(LeakAnOwner)}", report.Text);
        Assert.Contains("100 bytes", report.Text);
        // The memory stays allocated: a span from it may still be in use.
        Assert.Equal(1, Live(sys.Slab, sys.Slab.KmallocCache(100)!));
    }

    [Fact]
    public void AWriterDroppedWithoutDisposeIsReportedWithItsAllocationSite()
    {
        using var sys = NewSystem(trackOwnerLeaks: true);
        SlabReport report = Assert.Single(Collect(sys.Slab, () => LeakAWriter(sys.Slab)));
        Assert.Contains($"{nameof(OwnerLeakReportTests)}.{nameof(LeakAWriter)}", report.Text);
        Assert.Contains("5000 bytes written, 2 segment(s)", report.Text);
    }

    [Fact]
    public void DisposedOwnersAreNotReported()
    {
        using var sys = NewSystem(trackOwnerLeaks: true);
        Assert.Empty(Collect(sys.Slab, () => DisposeProperly(sys.Slab)));
    }

    [Fact]
    public void WithTrackingAStaleOwnerIsRefusedEvenAfterLaterRents()
    {
        using var sys = NewSystem(trackOwnerLeaks: true);
        SlabMemoryOwner stale = sys.Slab.RentMemory(64);
        Memory<byte> memory = stale.Memory;
        stale.Dispose();
        var later = new List<SlabMemoryOwner>();
        for (int i = 0; i < 100; i++) later.Add(sys.Slab.RentMemory(64));
        Assert.DoesNotContain(later, o => ReferenceEquals(o, stale));
        Assert.Throws<ObjectDisposedException>(stale.Dispose);
        Assert.Throws<ObjectDisposedException>(() => memory.Span[0]);
        foreach (SlabMemoryOwner o in later) o.Dispose();
    }
}
