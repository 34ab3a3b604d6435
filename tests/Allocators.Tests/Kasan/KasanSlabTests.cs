using Allocators.Common;
using Allocators.Kasan;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Tests.Kasan;

/// <summary>The kernel's KASAN slab and kmalloc cases (mm/kasan/kasan_test_c.c) through the library's access points.</summary>
public sealed unsafe class KasanSlabTests
{
    internal static MemorySystem NewSystem(long? quarantine = null) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions
        {
            Size = 32 << 20,
            Checks = new CheckedModeOptions { Kasan = true, QuarantineBytes = quarantine },
        },
    });

    private static KasanException Bad(KasanShadow kasan, void* p, int size, bool write)
        => Assert.Throws<KasanException>(() => kasan.Check(p, (nuint)size, write, "test"));

    /// <summary>Asserts exactly one report, with the type, address, size and access kind given.</summary>
    internal static KasanReport Single(KasanShadow kasan, string type, void* address, long size, bool write)
    {
        KasanReport r = Assert.Single(kasan.Reports);
        Assert.Equal(type, r.Type);
        Assert.Equal((nuint)address, r.Address);
        Assert.Equal(size, r.Size);
        Assert.Equal(write, r.IsWrite);
        Assert.StartsWith("==================================================================\nBUG: KASAN: " + type + " in ", r.Text);
        return r;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(32)]
    public void KmallocOutOfBoundsRightIsReportedOnceWithTheObjectAndCache(int overrun)
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        const int Size = 128 - 7; // kmalloc_oob_right: a size that is not a whole granule
        byte* p = (byte*)sys.Slab.Kmalloc(Size);
        kasan.Check(p, Size, write: true, "test"); // the whole object is fine
        byte* bad = p + Size + overrun - 1;
        var e = Bad(kasan, bad, 1, write: true);
        KasanReport r = Single(kasan, "slab-out-of-bounds", bad, 1, write: true);
        Assert.Same(r, e.Report);
        Assert.Contains($"Write of size 1 at addr {(nuint)bad:x16} by task ", r.Text, StringComparison.Ordinal);
        Assert.Contains($"The buggy address belongs to the object at {(nuint)p:x16}\n which belongs to the cache kmalloc-128 of size 128", r.Text, StringComparison.Ordinal);
        Assert.Contains($"located {overrun - 1} bytes to the right of\n allocated {Size}-byte region", r.Text, StringComparison.Ordinal);
        Assert.Contains("Allocated by task ", r.Text, StringComparison.Ordinal);
        // The same bug again: the access still fails, the report is not repeated.
        Bad(kasan, bad, 1, write: true);
        Assert.Single(kasan.Reports);
        sys.Slab.Kfree(p);
    }

    [Fact]
    public void WithoutStackTracesBugsAreStillReportedAndNoStackIsWalked()
    {
        static (long Bytes, MemorySystem System) PairsCost(string checks)
        {
            var sys = new MemorySystem(new MemorySystemOptions
            {
                Physical = new PhysicalMemoryOptions { Size = 32 << 20, Checks = CheckedModeOptions.Parse(checks) },
            });
            for (int i = 0; i < 100; i++) sys.Slab.Kfree(sys.Slab.Kmalloc(40)); // warm: the slab and the quarantine
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 200; i++) sys.Slab.Kfree(sys.Slab.Kmalloc(40));
            return (GC.GetAllocatedBytesForCurrentThread() - before, sys);
        }
        var (withTraces, traced) = PairsCost("kasan");
        traced.Dispose();
        var (without, sys) = PairsCost("kasan,kasan.stacktrace=off");
        using (sys)
        {
            // Each recorded site is a managed stack walk of several kilobytes.
            Assert.True(without * 10 < withTraces, $"{without} bytes without stack traces, {withTraces} with");
            KasanShadow kasan = sys.Memory.Kasan!;
            byte* p = (byte*)sys.Slab.Kmalloc(40);
            Bad(kasan, p + 40, 1, write: false);
            Single(kasan, "slab-out-of-bounds", p + 40, 1, write: false);
            sys.Slab.Kfree(p);
            Bad(kasan, p, 1, write: true);
            Assert.Equal(2, kasan.Reports.Count);
            Assert.Equal("slab-use-after-free", kasan.Reports[1].Type);
        }
    }

    [Fact]
    public void KfreeSensitiveOfAQuarantinedObjectIsRefusedAndTheQuarantineStaysSound()
    {
        var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(64);
        sys.Slab.Kfree(p); // waits in the quarantine, still allocated in its slab's bitmap
        Assert.ThrowsAny<MemoryCorruptionException>(() => sys.Slab.KfreeSensitive(p));
        Assert.ThrowsAny<MemoryCorruptionException>(() => sys.Slab.Ksize(p));
        Assert.Throws<KasanException>(() => kasan.Check(p, 1, write: false, "test")); // still poisoned as freed
        sys.Slab.ShrinkAll(); // gives it back without a second report
        Assert.DoesNotContain(kasan.Reports, r => r.Type == "double-free" && r.Address == (nuint)p && r.Text.Contains("qlink", StringComparison.Ordinal));
        sys.Dispose();
    }

    [Fact]
    public void AReadThatStraddlesTheEndReportsItsFirstBadByte()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(13);
        Bad(kasan, p + 8, 8, write: false);
        Single(kasan, "slab-out-of-bounds", p + 13, 8, write: false);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(32)]
    public void CacheOutOfBoundsLeftIsReported(int underrun)
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        var cache = sys.Slab.CreateCache("kasan-left", 64);
        byte* first = (byte*)cache.Alloc();
        byte* second = (byte*)cache.Alloc();
        foreach (byte* p in new[] { first, second })
        {
            byte* bad = p - underrun;
            Bad(kasan, bad, 1, write: false);
            Assert.Equal("slab-out-of-bounds", kasan.Reports[^1].Type);
            Assert.Equal((nuint)bad, kasan.Reports[^1].Address);
        }
        Assert.Equal(2, kasan.Reports.Count);
        cache.Free(first);
        cache.Free(second);
        cache.Destroy();
    }

    [Fact]
    public void UseAfterFreeReadAndWriteAreReportedWithBothTracks()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(128);
        sys.Slab.Kfree(p);
        Bad(kasan, p + 8, 1, write: false);
        KasanReport r = Single(kasan, "slab-use-after-free", p + 8, 1, write: false);
        Assert.Contains("Allocated by task ", r.Text, StringComparison.Ordinal);
        Assert.Contains("Freed by task ", r.Text, StringComparison.Ordinal);
        Assert.Contains("located 8 bytes inside of\n freed 128-byte region", r.Text, StringComparison.Ordinal);
        Bad(kasan, p + 16, 4, write: true);
        Assert.Equal(2, kasan.Reports.Count);
        Assert.True(kasan.Reports[1].IsWrite);
        Assert.Equal("slab-use-after-free", kasan.Reports[1].Type);
    }

    [Fact]
    public void TheQuarantineDelaysReuseAndShrinkGivesEverythingBack()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        string baseline = Slab.SlabTestSupport.Baseline(sys);
        var cache = sys.Slab.CreateCache("kasan-q", 64);
        var freed = new HashSet<nint>();
        for (int i = 0; i < 100; i++)
        {
            void* p = cache.Alloc();
            freed.Add((nint)p);
            cache.Free(p);
        }
        Assert.Equal(100, kasan.Quarantine.Count);
        // Nothing freed comes back while it waits in the quarantine.
        var live = new List<nint>();
        for (int i = 0; i < 100; i++) live.Add((nint)cache.Alloc());
        Assert.Empty(live.Intersect(freed));
        foreach (nint p in live) cache.Free((void*)p);
        Assert.Equal(200, kasan.Quarantine.Count);
        Slab.SlabTestSupport.AssertEmptiedBackToBaseline(sys, cache, baseline);
        Assert.Equal(0, kasan.Quarantine.Count);
    }

    [Fact]
    public void ABoundedQuarantineGivesTheOldestBackFirst()
    {
        using var sys = NewSystem(quarantine: 4096);
        KasanShadow kasan = sys.Memory.Kasan!;
        var cache = sys.Slab.CreateCache("kasan-bound", 64);
        for (int i = 0; i < 1000; i++) cache.Free(cache.Alloc());
        // The global FIFO's limit plus less than a batch on this thread's list.
        Assert.InRange(kasan.Quarantine.Bytes, 1, kasan.Quarantine.MaxBytes + kasan.Quarantine.BatchBytes);
        Assert.Equal(kasan.Quarantine.Bytes / cache.SlotSize, kasan.Quarantine.Count);
        cache.Destroy();
    }

    [Fact]
    public void DoubleFreeIsReportedAndStillThrows()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        void* p = sys.Slab.Kmalloc(64);
        sys.Slab.Kfree(p);
        Assert.Throws<MemoryCorruptionException>(() => sys.Slab.Kfree(p));
        KasanReport r = Single(kasan, "double-free", p, 0, write: false);
        Assert.Contains("kmalloc-64", r.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void InvalidFreeIsReportedAndStillThrows()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(64);
        Assert.Throws<MemoryCorruptionException>(() => sys.Slab.Kfree(p + 1));
        Single(kasan, "invalid-free", p + 1, 0, write: false);
        sys.Slab.Kfree(p);
    }

    [Fact]
    public void KsizeOfAFreedObjectIsAUseAfterFree()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        void* p = sys.Slab.Kmalloc(128);
        sys.Slab.Kfree(p);
        Assert.Throws<KasanException>(() => sys.Slab.Ksize(p));
        Single(kasan, "slab-use-after-free", p, 1, write: false);
    }

    [Fact]
    public void KsizeUnpoisonsUpToTheUsableSize()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = (byte*)sys.Slab.Kmalloc(100);
        Bad(kasan, p + 100, 1, write: false);
        nuint size = sys.Slab.Ksize(p);
        Assert.Equal(128u, size);
        kasan.Check(p, size, write: true, "test");
        Bad(kasan, p + size, 1, write: false);
        Assert.Equal(2, kasan.Reports.Count);
        sys.Slab.Kfree(p);
    }

    [Theory]
    [InlineData(201, 235)]
    [InlineData(235, 201)]
    [InlineData(201, 300)]
    public void KreallocThenAccessPastTheNewSizeIsReported(int from, int to)
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p1 = (byte*)sys.Slab.Kmalloc((nuint)from);
        byte* p2 = (byte*)sys.Slab.Krealloc(p1, (nuint)to);
        kasan.Check(p2, (nuint)to, write: true, "test");
        Bad(kasan, p2 + to, 1, write: true);
        Single(kasan, "slab-out-of-bounds", p2 + to, 1, write: true);
        if (p2 != p1)
        {
            Bad(kasan, p1, 1, write: false);
            Assert.Equal("slab-use-after-free", kasan.Reports[^1].Type);
        }
        sys.Slab.Kfree(p2);
    }

    [Fact]
    public void KmallocLargeOutOfBoundsIsReported()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        const int Size = SlabAllocator.KmallocMaxCacheSize + 10;
        byte* p = (byte*)sys.Slab.Kmalloc(Size);
        kasan.Check(p, Size, write: true, "test");
        Bad(kasan, p + Size + 6, 1, write: true);
        Single(kasan, "slab-out-of-bounds", p + Size + 6, 1, write: true);
        sys.Slab.Kfree(p);
        Bad(kasan, p, 1, write: false);
        Assert.Equal("use-after-free", kasan.Reports[^1].Type);
        Assert.Throws<Allocators.Common.BadPageException>(() => sys.Slab.Kfree(p));
        Assert.Equal("double-free", kasan.Reports[^1].Type);
    }

    [Fact]
    public void PageOutOfBoundsAndUseAfterFreeAreReported()
    {
        using var sys = NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        byte* p = sys.Pages.GetFreePages(Allocators.PageAlloc.Gfp.Kernel, 1);
        kasan.Check(p, 2 * 4096, write: true, "test");
        Bad(kasan, p + 2 * 4096, 1, write: false);
        Assert.Equal((nuint)(p + 2 * 4096), Assert.Single(kasan.Reports).Address);
        sys.Pages.FreePages(p, 1);
        Bad(kasan, p, 8, write: true);
        Assert.Equal("use-after-free", kasan.Reports[^1].Type);
        Assert.Contains("The buggy address belongs to the physical page", kasan.Reports[^1].Text, StringComparison.Ordinal);
    }

    [Fact]
    public void WithKasanOffThereIsNoShadow()
    {
        using var sys = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 16 << 20, Checks = new CheckedModeOptions { Kasan = false } } });
        Assert.Null(sys.Memory.Kasan);
        Assert.NotEqual(0, sys.Slab.KmallocCaches[0].Data->FastPath);
    }
}
