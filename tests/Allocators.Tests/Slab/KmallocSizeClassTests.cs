using System.Numerics;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>The kmalloc size classes: the kernel's set by default, four per power of two with <see cref="KmallocSizeClasses.Fine"/>.</summary>
public unsafe class KmallocSizeClassTests
{
    [Fact]
    public void KernelClassesAreTheKernelsKmallocCachesUpTo32K()
    {
        using var sys = NewSystem();
        Assert.Equal(["kmalloc-16", "kmalloc-32", "kmalloc-64", "kmalloc-96", "kmalloc-128", "kmalloc-192",
            "kmalloc-256", "kmalloc-512", "kmalloc-1k", "kmalloc-2k", "kmalloc-4k", "kmalloc-8k", "kmalloc-16k", "kmalloc-32k"],
            sys.Slab.KmallocCaches.Select(c => c.Name));
    }

    [Fact]
    public void FineClassesAreFourPerPowerOfTwo()
    {
        using var sys = NewSystem(classes: KmallocSizeClasses.Fine);
        Assert.Equal([16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
            1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576,
            28672, 32768],
            sys.Slab.KmallocCaches.Select(c => c.ObjectSize));
        Assert.Contains(sys.Slab.KmallocCaches, c => c.Name == "kmalloc-1280");
        Assert.Contains(sys.Slab.KmallocCaches, c => c.Name == "kmalloc-5k");
        Assert.Equal(sys.Slab.KmallocCaches.Count, sys.Slab.KmallocCaches.Select(c => c.Name).Distinct().Count());
    }

    [Theory]
    [InlineData(KmallocSizeClasses.Kernel)]
    [InlineData(KmallocSizeClasses.Fine)]
    public void EverySizeGetsTheSmallestClassThatHoldsIt(KmallocSizeClasses classes)
    {
        using var sys = NewSystem(classes: classes);
        var caches = sys.Slab.KmallocCaches;
        for (int size = 1; size <= SlabAllocator.KmallocMaxCacheSize; size++)
        {
            KmemCache expected = caches.First(c => c.ObjectSize >= size);
            Assert.Same(expected, sys.Slab.KmallocCache((nuint)size));
        }
        Assert.Null(sys.Slab.KmallocCache(SlabAllocator.KmallocMaxCacheSize + 1));
    }

    [Fact]
    public void FineClassesWasteAtMostAQuarterAbove64Bytes()
    {
        using var sys = NewSystem(classes: KmallocSizeClasses.Fine);
        for (int size = 65; size <= SlabAllocator.KmallocMaxCacheSize; size++)
        {
            int slot = sys.Slab.KmallocCache((nuint)size)!.ObjectSize;
            Assert.True(slot * 4 <= size * 5, $"kmalloc({size}) gets a {slot}-byte slot");
        }
    }

    // 1,500 blocks of up to 32 KiB take ~24 MiB of kernel memory: room for it with a low/high split and KASAN.
    [Fact]
    public void FineClassesAllocateAlignedDistinctBlocksAndGiveEveryPageBack()
    {
        using var sys = NewSystem(128, classes: KmallocSizeClasses.Fine);
        string baseline = Baseline(sys);
        var blocks = new List<(nint P, int Size)>();
        var rnd = new Random(5);
        for (int i = 0; i < 1500; i++)
        {
            int size = rnd.Next(1, SlabAllocator.KmallocMaxCacheSize + 1);
            byte* p = (byte*)sys.Slab.Kmalloc((nuint)size);
            Assert.True(p != null);
            Assert.True((nuint)p % 8 == 0);
            if (BitOperations.IsPow2(size)) Assert.True((nuint)p % (nuint)size == 0, $"kmalloc({size}) = 0x{(nuint)p:x} is not naturally aligned");
            Assert.True(sys.Slab.Ksize(p) >= (nuint)size);
            new Span<byte>(p, size).Fill((byte)i);
            blocks.Add(((nint)p, size));
        }
        for (int i = 0; i < blocks.Count; i++)
        {
            var (p, size) = blocks[i];
            Assert.True(new Span<byte>((void*)p, size).IndexOfAnyExcept((byte)i) < 0, $"block {i} at 0x{p:x} was overwritten");
        }
        foreach (var (p, _) in blocks) sys.Slab.Kfree((void*)p);
        AssertBackToBaseline(sys, baseline);
    }

    [Fact]
    public void TheKmallocHandleServesEveryFineClassFromItsMagazines()
    {
        using var sys = NewUncheckedSystem(64, classes: KmallocSizeClasses.Fine);
        string baseline = Baseline(sys);
        var k = sys.Slab.ThisThread();
        foreach (KmemCache cache in sys.Slab.KmallocCaches)
        {
            void* first = k.Kmalloc((nuint)cache.ObjectSize);
            k.Kfree(first);
            long fast = cache.Stats.AllocFastPath;
            void* again = k.Kmalloc((nuint)cache.ObjectSize);
            Assert.True(again == first, $"{cache.Name}: the object just freed through the handle is not reused");
            Assert.Equal(fast + 1, cache.Stats.AllocFastPath);
            k.Kfree(again);
        }
        AssertBackToBaseline(sys, baseline);
    }

    [Theory]
    [InlineData(KmallocSizeClasses.Kernel)]
    [InlineData(KmallocSizeClasses.Fine)]
    public void EverySlabRecordsItsKmallocClassAndAnEmptiedSlabForgetsIt(KmallocSizeClasses classes)
    {
        using var sys = NewSystem(64, classes: classes);
        var other = sys.Slab.CreateCache("not-kmalloc", 72);
        var caches = sys.Slab.KmallocCaches;
        var blocks = new List<nint>();
        for (int i = 0; i < caches.Count; i++)
        {
            void* p = sys.Slab.Kmalloc((nuint)caches[i].ObjectSize);
            PageFrame* slab = KmemCache.SlabOf(sys.Memory, p);
            Assert.Equal(i, SlabPage.KmallocClass(slab));
            blocks.Add((nint)p);
        }
        void* q = other.Alloc();
        PageFrame* otherSlab = KmemCache.SlabOf(sys.Memory, q);
        Assert.Equal(SlabPage.NoKmallocClass, SlabPage.KmallocClass(otherSlab));
        other.Free(q);
        other.Shrink();
        Assert.Equal(0UL, otherSlab->FlagsAndZone & SlabPage.KmallocClassMask);
        foreach (nint p in blocks) sys.Slab.Kfree((void*)p);
        sys.Slab.ShrinkAll();
        other.Destroy();
    }
}
