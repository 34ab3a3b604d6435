using Allocators.PageAlloc;
using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// SLUB debugging as the kernel's KUnit slub tests exercise it: poison values, red zones around live and free objects,
/// kmalloc slack red zones, the free pointer, krealloc's red-zoning, store-user tracks and destroy with live objects.
/// Every report is checked for its exact title, the first bad byte and its @offset; after each repair a second
/// Validate() finds nothing. Freed memory is read through kept pointers, so these tests are single-threaded.
/// </summary>
public unsafe class SlabDebugTests(ITestOutputHelper output)
{
    private const int Size = 100;

    private static KmemCache NewDebugCache(MemorySystem sys, string name = "debug-100", int size = Size)
        => sys.Slab.CreateCache(name, size, 0, SlabFlags.Debug);

    private SlabReport Single(IReadOnlyList<SlabReport> reports)
    {
        foreach (var r in reports) output.WriteLine(r.Text);
        return Assert.Single(reports);
    }

    [Fact]
    public void LayoutKeepsMetadataOutsideTheObject()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        Assert.Equal(Size, cache.ObjectSize);
        Assert.True(cache.RedLeftPad >= 8, "red zoning needs a left pad");
        Assert.True(cache.InUseSize >= Size + 4, "a right red zone follows the object");
        Assert.True(cache.SlotSize >= cache.RedLeftPad + cache.InUseSize + 2 * 8, "tracks follow the right red zone");

        KmemCache exact = NewDebugCache(sys, "debug-64", 64);
        Assert.True(exact.InUseSize >= 64 + 8, "an object that fills its words still gets a word of right red zone");
    }

    [Fact]
    public void FreshObjectReadsInUsePoisonAndActiveRedZones()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        Assert.True(p != null);
        AssertBytes(p, Size, SlabPoison.InUse, "body of a new object");
        AssertBytes(p - cache.RedLeftPad, cache.RedLeftPad, SlabPoison.RedActive, "left red zone of a live object");
        AssertBytes(p + Size, cache.InUseSize - Size, SlabPoison.RedActive, "right red zone of a live object");

        cache.Free(p);
        AssertBytes(p, Size - 1, SlabPoison.Free, "body of a free object");
        Assert.Equal(SlabPoison.End, p[Size - 1]);
        AssertBytes(p - cache.RedLeftPad, cache.RedLeftPad, SlabPoison.RedInactive, "left red zone of a free object");
        AssertBytes(p + Size, cache.InUseSize - Size, SlabPoison.RedInactive, "right red zone of a free object");
        Assert.Empty(cache.Validate());
        Assert.Equal(0, cache.CorruptionsFound);
    }

    [Fact]
    public void PoisonByteValuesMatchTheKernel()
    {
        Assert.Equal(0x5a, SlabPoison.InUse);
        Assert.Equal(0x6b, SlabPoison.Free);
        Assert.Equal(0xa5, SlabPoison.End);
        Assert.Equal(0xcc, SlabPoison.RedActive);
        Assert.Equal(0xbb, SlabPoison.RedInactive);
    }

    [Fact]
    public void KmallocSlackIsRedZonedInADebugKmallocCache()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        KmemCache k64 = sys.Slab.KmallocCache(64)!;
        byte* p = (byte*)sys.Slab.Kmalloc(50);
        Assert.True(k64.Owns(p));
        AssertBytes(p, 50, SlabPoison.InUse, "requested bytes");
        AssertBytes(p + 50, 14, SlabPoison.RedActive, "kmalloc slack [50, 64)");
        AssertBytes(p + 64, k64.InUseSize - 64, SlabPoison.RedActive, "right red zone");
        sys.Slab.Kfree(p);
        Assert.Empty(k64.Reports);
    }

    [Theory]
    [InlineData(SlabFlags.None)]
    [InlineData(SlabFlags.RedZone)]
    [InlineData(SlabFlags.Debug)]
    public void PowerOfTwoKmallocStaysNaturallyAlignedWithDebugFlags(SlabFlags flags)
    {
        using var sys = NewSystem(kmallocFlags: flags);
        string baseline = Baseline(sys);
        var blocks = new List<nint>();
        for (nuint size = 8; size <= SlabAllocator.KmallocMaxCacheSize; size *= 2)
        {
            for (int i = 0; i < 5; i++)
            {
                void* p = sys.Slab.Kmalloc(size);
                Assert.True(p != null);
                Assert.True((nuint)p % size == 0, $"kmalloc({size}) = {Hex(p)} with {flags} is not {size}-aligned");
                blocks.Add((nint)p);
            }
        }
        sys.Slab.KfreeBulk(blocks.ToArray());
        foreach (var k in sys.Slab.KmallocCaches) Assert.Empty(k.Validate());
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void RightRedZoneOfLiveObjectOverwritten()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        SlabReport? raised = null;
        sys.Slab.CorruptionDetected += r => raised = r;
        byte* p = (byte*)cache.Alloc();
        p[Size] = 0x00;
        p[Size + 2] = 0x11;

        SlabReport report = Single(cache.Validate());
        Assert.Equal("BUG debug-100: Right Redzone overwritten", report.Title);
        Assert.Equal("Right Redzone overwritten", report.Problem);
        Assert.Equal("debug-100", report.Cache);
        Assert.Equal((nuint)p, report.Address);
        Assert.Contains("First byte 0x00 instead of 0xcc", report.Text);
        Assert.Contains(OffsetText(sys, p, p + Size), report.Text);
        Assert.Contains($"{Hex(p + Size)}-{Hex(p + Size + 2)}", report.Text);
        Assert.StartsWith("=====", report.Text);
        Assert.Contains("\nBUG debug-100: Right Redzone overwritten\n", report.Text);
        Assert.Contains("FIX debug-100: Restoring Right Redzone", report.Text);
        Assert.Same(report, raised);
        Assert.Equal(1, cache.CorruptionsFound);

        AssertBytes(p + Size, cache.InUseSize - Size, SlabPoison.RedActive, "repaired right red zone");
        Assert.Empty(cache.Validate());
        cache.Free(p);
        Assert.Empty(cache.Validate());
        Assert.Single(cache.Reports);
    }

    [Fact]
    public void RightRedZoneOverwriteIsFoundAtFreeToo()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        p[Size + 1] = 0x42;
        cache.Free(p);
        SlabReport report = Single(cache.Reports);
        Assert.Equal("BUG debug-100: Right Redzone overwritten", report.Title);
        Assert.Contains("First byte 0x42 instead of 0xcc", report.Text);
        Assert.Contains(OffsetText(sys, p, p + Size + 1), report.Text);
        Assert.Empty(cache.Validate());
    }

    [Theory]
    [InlineData(0, 8)]     // the first word, where a non-debug cache would keep its free pointer
    [InlineData(50, 1)]    // the 50th byte
    public void WriteIntoFreedPoisonedObject(int offset, int length)
    {
        using var sys = NewUncheckedSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        byte* keep = (byte*)cache.Alloc(); // keeps the slab in use
        cache.Free(p);
        for (int i = 0; i < length; i++) p[offset + i] = (byte)(0x12 + i);

        SlabReport report = Single(cache.Validate());
        Assert.Equal("BUG debug-100: Poison overwritten", report.Title);
        Assert.Contains("First byte 0x12 instead of 0x6b", report.Text);
        Assert.Contains(OffsetText(sys, p, p + offset), report.Text);
        Assert.Contains($"{Hex(p + offset)}-{Hex(p + offset + length - 1)}", report.Text);
        AssertBytes(p, Size - 1, SlabPoison.Free, "repaired poison");
        Assert.Equal(SlabPoison.End, p[Size - 1]);
        Assert.Empty(cache.Validate());

        // The repaired object is handed out again without another report.
        byte* again = (byte*)cache.Alloc();
        Assert.True(again == p);
        Assert.Empty(cache.Validate());
        Assert.Equal(1, cache.CorruptionsFound);
        cache.Free(again);
        cache.Free(keep);
    }

    [Fact]
    public void PoisonEndByteOverwritten()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        cache.Free(p);
        p[Size - 1] = SlabPoison.Free;
        SlabReport report = Single(cache.Validate());
        Assert.Equal("BUG debug-100: Poison overwritten", report.Title);
        Assert.Contains("First byte 0x6b instead of 0xa5", report.Text);
        Assert.Contains(OffsetText(sys, p, p + Size - 1), report.Text);
        Assert.Equal(SlabPoison.End, p[Size - 1]);
        Assert.Empty(cache.Validate());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void RedZoneOfFreeObjectOverwritten(bool left)
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        byte* keep = (byte*)cache.Alloc();
        cache.Free(p);
        byte* bad = left ? p - 1 : p + Size;
        *bad = 0x33;

        SlabReport report = Single(cache.Validate());
        Assert.Equal(left ? "BUG debug-100: Left Redzone overwritten" : "BUG debug-100: Right Redzone overwritten", report.Title);
        Assert.Contains("First byte 0x33 instead of 0xbb", report.Text);
        Assert.Contains(OffsetText(sys, p, bad), report.Text);
        Assert.Equal(SlabPoison.RedInactive, *bad);
        Assert.Empty(cache.Validate());
        cache.Free(keep);
    }

    [Fact]
    public void LeftRedZoneOfLiveObjectOverwritten()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        p[-cache.RedLeftPad] = 0x01;
        SlabReport report = Single(cache.Validate());
        Assert.Equal("BUG debug-100: Left Redzone overwritten", report.Title);
        Assert.Contains("First byte 0x01 instead of 0xcc", report.Text);
        Assert.Contains(OffsetText(sys, p, p - cache.RedLeftPad), report.Text);
        Assert.Empty(cache.Validate());
        cache.Free(p);
    }

    [Fact]
    public void KmallocSlackWriteIsReported()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        KmemCache k64 = sys.Slab.KmallocCache(64)!;
        byte* p = (byte*)sys.Slab.Kmalloc(50);
        p[50] = 0x78;
        SlabReport report = Single(k64.Validate());
        Assert.Equal("BUG kmalloc-64: kmalloc Redzone overwritten", report.Title);
        Assert.Contains("First byte 0x78 instead of 0xcc", report.Text);
        Assert.Contains(OffsetText(sys, p, p + 50), report.Text);
        Assert.Empty(k64.Validate());
        sys.Slab.Kfree(p);
        Assert.Single(k64.Reports);
    }

    [Fact]
    public void KmallocSlackWriteIsReportedAtKfree()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        KmemCache k128 = sys.Slab.KmallocCache(100)!;
        Assert.Equal("kmalloc-128", k128.Name);
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        p[127] = 0x01;
        sys.Slab.Kfree(p);
        SlabReport report = Single(k128.Reports);
        Assert.Equal("BUG kmalloc-128: kmalloc Redzone overwritten", report.Title);
        Assert.Contains("First byte 0x01 instead of 0xcc", report.Text);
        Assert.Contains(OffsetText(sys, p, p + 127), report.Text);
        Assert.Empty(k128.Validate());
    }

    [Fact]
    public void KzallocZeroesOnlyTheRequestedBytesAndKeepsTheSlackRedZone()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        KmemCache k64 = sys.Slab.KmallocCache(64)!;
        byte* p = (byte*)sys.Slab.Kzalloc(50);
        AssertBytes(p, 50, 0, "kzalloc'd bytes");
        AssertBytes(p + 50, 14, SlabPoison.RedActive, "kmalloc slack of a kzalloc'd object");
        Assert.Empty(k64.Validate());
        sys.Slab.Kfree(p);
        foreach (var r in k64.Reports) output.WriteLine(r.Text);
        Assert.Empty(k64.Reports);

        byte* q = (byte*)sys.Slab.Kcalloc(5, 10);
        AssertBytes(q, 50, 0, "kcalloc'd bytes");
        sys.Slab.Kfree(q);
        Assert.Empty(k64.Reports);
    }

    [Fact]
    public void KreallocShrinkInPlaceRedZonesTheNewTail()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        KmemCache k128 = sys.Slab.KmallocCache(128)!;
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        Stamp(p, 100, 0xfeed);
        byte* q = (byte*)sys.Slab.Krealloc(p, 40);
        Assert.True(q == p, "shrinking stays in place");
        AssertStamp(p, 40, 0xfeed);
        AssertBytes(p + 40, 128 - 40, SlabPoison.RedActive, "new tail after shrinking");
        Assert.Empty(k128.Validate());

        p[60] = 0x00;
        SlabReport report = Single(k128.Validate());
        Assert.Equal("BUG kmalloc-128: kmalloc Redzone overwritten", report.Title);
        Assert.Contains("First byte 0x00 instead of 0xcc", report.Text);
        Assert.Contains(OffsetText(sys, p, p + 60), report.Text);
        Assert.Empty(k128.Validate());
        sys.Slab.Kfree(p);
        Assert.Single(k128.Reports);
    }

    [Fact]
    public void KreallocGrowWithinTheSlotStaysAndZeroes()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        KmemCache k128 = sys.Slab.KmallocCache(128)!;
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        Assert.True(k128.Owns(p));
        Stamp(p, 100, 0xbeef);
        byte* q = (byte*)sys.Slab.Krealloc(p, 120, Gfp.Kernel | Gfp.Zero);
        Assert.True(q == p, "growing within the slot stays in place");
        AssertStamp(p, 100, 0xbeef);
        AssertBytes(p + 100, 20, 0, "[old, new) after krealloc with Gfp.Zero");
        AssertBytes(p + 120, 8, SlabPoison.RedActive, "slack after the new size");
        Assert.Empty(k128.Validate());

        // Growing to the full slot leaves no kmalloc red zone to check.
        q = (byte*)sys.Slab.Krealloc(p, 128);
        Assert.True(q == p);
        p[127] = 0x01;
        Assert.Empty(k128.Validate());
        sys.Slab.Kfree(p);
        Assert.Empty(k128.Reports);
    }

    [Fact]
    public void KreallocGrowBeyondTheSlotMovesAndPreservesContents()
    {
        using var sys = NewSystem(kmallocFlags: SlabFlags.Debug);
        string baseline = Baseline(sys);
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        Stamp(p, 100, 0xabcdef);
        byte* q = (byte*)sys.Slab.Krealloc(p, 300);
        Assert.True(q != p, "growing beyond the slot moves");
        Assert.True(sys.Slab.KmallocCache(300)!.Owns(q));
        AssertStamp(q, 100, 0xabcdef);
        AssertBytes(q + 100, 200, SlabPoison.InUse, "bytes beyond the copied contents are uninitialised");
        AssertBytes(q + 300, 512 - 300, SlabPoison.RedActive, "slack of the new object");
        AssertBytes(p, 127, SlabPoison.Free, "the old object is freed (poisoned)");

        byte* r = (byte*)sys.Slab.Krealloc(q, 20000);
        Assert.True(r != q);
        AssertStamp(r, 100, 0xabcdef);
        Assert.True(sys.Slab.Ksize(r) >= 20000);
        sys.Slab.Kfree(r);
        foreach (var cache in sys.Slab.KmallocCaches) Assert.Empty(cache.Validate());
        foreach (var cache in sys.Slab.KmallocCaches) Assert.Empty(cache.Reports);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void KreallocRulesWithoutDebugging()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        Stamp(p, 100, 7);
        Assert.True(sys.Slab.Krealloc(p, 10) == p);
        Assert.True(sys.Slab.Krealloc(p, 128) == p);
        AssertStamp(p, 10, 7);
        byte* q = (byte*)sys.Slab.Krealloc(p, 129);
        Assert.True(q != p);
        AssertStamp(q, 100, 7);
        Assert.True(sys.Slab.Krealloc(q, 0) == SlabAllocator.ZeroSizePointer, "krealloc to 0 frees and returns ZERO_SIZE_PTR");
        byte* fresh = (byte*)sys.Slab.Krealloc(null, 64);
        Assert.True(fresh != null && sys.Slab.KmallocCache(64)!.Owns(fresh), "krealloc(NULL) is kmalloc");
        sys.Slab.Kfree(fresh);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void DestroyWithLiveObjectThrowsAndKeepsTheCacheUsable()
    {
        using var sys = NewSystem();
        string baseline = Baseline(sys);
        KmemCache cache = sys.Slab.CreateCache("leaky", 48, 0, SlabFlags.Debug);
        byte* p = (byte*)cache.Alloc();
        Stamp(p, 48, 99);
        var ex = Assert.Throws<InvalidOperationException>(() => cache.Destroy());
        output.WriteLine(ex.Message);
        Assert.Contains("Objects remaining", ex.Message);
        Assert.Contains(Hex(p), ex.Message);
        Assert.Contains(cache, sys.Slab.Caches);
        SlabReport report = Assert.Single(cache.Reports);
        Assert.Equal("BUG leaky: Objects remaining on __kmem_cache_shutdown()", report.Title);

        // Still usable, the live object untouched.
        AssertStamp(p, 48, 99);
        byte* q = (byte*)cache.Alloc();
        Assert.True(q != null && cache.Owns(q));
        cache.Free(q);
        cache.Free(p);
        Assert.Empty(cache.Validate());
        cache.Destroy();
        Assert.DoesNotContain(cache, sys.Slab.Caches);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void DestroyWithLiveObjectThrowsForANonDebugCache()
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("leaky-fast", 64);
        void* p = cache.Alloc();
        var ex = Assert.Throws<InvalidOperationException>(() => cache.Destroy());
        Assert.Contains("Objects remaining", ex.Message);
        Assert.Equal(1, cache.ActiveObjects);
        cache.Free(p);
        cache.Destroy();
        Assert.DoesNotContain(cache, sys.Slab.Caches);
    }

    [Fact]
    public void StoreUserReportsNameTheAllocatingAndFreeingMethods()
    {
        using var sys = NewSystem();
        KmemCache cache = NewDebugCache(sys);
        byte* p = (byte*)cache.Alloc();
        byte* live = (byte*)cache.Alloc();
        string method = $"{nameof(SlabDebugTests)}.{nameof(StoreUserReportsNameTheAllocatingAndFreeingMethods)}";
        Assert.StartsWith(method, cache.AllocationSite(live));
        cache.Free(p);
        p[3] = 0;

        SlabReport report = Single(cache.Validate());
        Assert.Contains($"Allocated in {method}", report.Text);
        Assert.Contains($"Freed in {method}", report.Text);

        // A live object's report carries its allocation site but no free site yet.
        live[Size] = 0;
        SlabReport liveReport = Single(cache.Validate());
        Assert.Contains($"Allocated in {method}", liveReport.Text);
        Assert.DoesNotContain("Freed in", liveReport.Text);

        var ex = Assert.Throws<InvalidOperationException>(() => cache.Destroy());
        Assert.Contains($"allocated in {method}", ex.Message);
        cache.Free(live);
    }
}
