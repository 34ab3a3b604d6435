using Allocators.Common;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Tests.Checks;

/// <summary>
/// The kernel's lib/test_meminit.c scenarios against init_on_alloc and init_on_free (<see cref="CheckedModeOptions"/>):
/// memory filled with a pattern and freed reads zero when it comes back (init_on_alloc), or as soon as it is freed,
/// seen directly in the arena (init_on_free); constructor caches keep their constructed contents; Gfp.Zero still works.
/// Each scenario also runs with the modes off to show that it would see the pattern without them.
/// </summary>
public unsafe class MemInitTests
{
    private const byte Pattern = 0xA5;

    /// <summary>Every checked mode off, whatever ALLOCATORS_CHECKS says.</summary>
    internal static CheckedModeOptions AllOff => CheckedModeOptions.Parse("");

    /// <summary>The given modes on and the others of these tests off, whatever ALLOCATORS_CHECKS says.</summary>
    internal static CheckedModeOptions Modes(bool initOnAlloc = false, bool initOnFree = false, bool freelistRandom = false, bool shufflePages = false)
        => new() { InitOnAlloc = initOnAlloc, InitOnFree = initOnFree, SlabFreelistRandom = freelistRandom, ShufflePages = shufflePages };

    internal static MemorySystem NewSystem(CheckedModeOptions checks, long size = 64L << 20)
        => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = size, Checks = checks } });

    private static bool AllZero(byte* p, nuint length)
    {
        for (nuint i = 0; i < length; i++)
        {
            if (p[i] != 0) return false;
        }
        return true;
    }

    private static void Fill(void* p, nuint length) => new Span<byte>(p, checked((int)length)).Fill(Pattern);

    private static readonly int[] PageOrders = [0, 1, 3, 5, 9];
    private static readonly nuint[] KmallocSizes = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];

    /// <summary>Fills and frees pages of several orders, then counts pages that come back not zero.</summary>
    private static int DirtyPagesAfterReuse(MemorySystem system)
    {
        PageAllocator pages = system.Pages;
        int dirty = 0;
        foreach (int order in PageOrders)
        {
            for (int round = 0; round < 4; round++)
            {
                PageFrame* page = pages.AllocPages(Gfp.Kernel, order);
                Assert.True(page != null);
                byte* p = pages.PageAddress(page);
                Fill(p, (nuint)PageFrame.PageSize << order);
                pages.FreePages(page, order);
                page = pages.AllocPages(Gfp.Kernel, order);
                if (!AllZero(pages.PageAddress(page), (nuint)PageFrame.PageSize << order)) dirty++;
                pages.FreePages(page, order);
            }
        }
        return dirty;
    }

    [Fact]
    public void InitOnAlloc_PagesOfEveryOrderReadZeroAfterReuse()
    {
        using (var plain = NewSystem(AllOff))
            Assert.True(DirtyPagesAfterReuse(plain) > 0, "without init_on_alloc a freed page comes back with its pattern");
        using var system = NewSystem(Modes(initOnAlloc: true));
        Assert.Equal(0, DirtyPagesAfterReuse(system));
    }

    [Fact]
    public void InitOnAllocAndFree_PagesReadZeroAfterReuse()
    {
        using var system = NewSystem(Modes(initOnAlloc: true, initOnFree: true));
        Assert.Equal(0, DirtyPagesAfterReuse(system));
    }

    /// <summary>Fills and frees kmalloc objects of every size class, a large kmalloc and objects of two caches, then counts dirty ones on reuse.</summary>
    private static int DirtyObjectsAfterReuse(MemorySystem system)
    {
        SlabAllocator slab = system.Slab;
        int dirty = 0;
        var ptrs = new nint[32];
        foreach (nuint size in KmallocSizes.Concat([(nuint)20000, (nuint)100_000]))
        {
            for (int i = 0; i < ptrs.Length; i++)
            {
                ptrs[i] = (nint)slab.Kmalloc(size);
                Fill((void*)ptrs[i], size);
            }
            foreach (nint p in ptrs) slab.Kfree((void*)p);
            for (int i = 0; i < ptrs.Length; i++)
            {
                ptrs[i] = (nint)slab.Kmalloc(size);
                if (!AllZero((byte*)ptrs[i], size)) dirty++;
            }
            foreach (nint p in ptrs) slab.Kfree((void*)p);
        }
        foreach (int size in new[] { 24, 200, 3000 })
        {
            KmemCache cache = slab.CreateCache($"meminit-{size}", size, flags: SlabFlags.NoMerge);
            for (int i = 0; i < ptrs.Length; i++)
            {
                ptrs[i] = (nint)cache.Alloc();
                Fill((void*)ptrs[i], (nuint)size);
            }
            foreach (nint p in ptrs) cache.Free((void*)p);
            for (int i = 0; i < ptrs.Length; i++)
            {
                ptrs[i] = (nint)cache.Alloc();
                if (!AllZero((byte*)ptrs[i], (nuint)size)) dirty++;
            }
            foreach (nint p in ptrs) cache.Free((void*)p);
            cache.Destroy();
        }
        return dirty;
    }

    [Fact]
    public void InitOnAlloc_SlabKmallocAndLargeKmallocReadZeroAfterReuse()
    {
        using (var plain = NewSystem(AllOff))
            Assert.True(DirtyObjectsAfterReuse(plain) > 0, "without init_on_alloc a freed object comes back with its pattern");
        using var system = NewSystem(Modes(initOnAlloc: true));
        Assert.Equal(0, DirtyObjectsAfterReuse(system));
    }

    [Fact]
    public void InitOnAlloc_DebugCachesWithoutPoisonAreZeroedToo()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 64L << 20, Checks = Modes(initOnAlloc: true, initOnFree: true) },
            Slab = new SlabAllocatorOptions { KmallocFlags = SlabFlags.RedZone | SlabFlags.StoreUser },
        });
        Assert.Equal(0, DirtyObjectsAfterReuse(system));
        Assert.All(system.Slab.Caches, c => Assert.Empty(c.Reports));
    }

    [Fact]
    public void InitOnAlloc_VmallocAndPercpuReadZeroAfterReuse()
    {
        using var system = NewSystem(Modes(initOnAlloc: true));
        var vmalloc = system.Vmalloc;
        const ulong Size = 5 * 4096 + 100;
        ulong a = vmalloc.Vmalloc(Size);
        system.Kernel.Memset(a, Pattern, (long)Size);
        vmalloc.Vfree(a);
        ulong b = vmalloc.Vmalloc(Size);
        var bytes = new byte[Size];
        system.Kernel.ReadBytes(b, bytes);
        Assert.All(bytes, x => Assert.Equal(0, x));
        vmalloc.Vfree(b);

        nint pcpu = system.Percpu.AllocPercpu(256);
        for (int cpu = 0; cpu < system.Percpu.PossibleCpus; cpu++) Fill(system.Percpu.PerCpuPtr(pcpu, cpu), 256);
        system.Percpu.FreePercpu(pcpu);
        pcpu = system.Percpu.AllocPercpu(256);
        for (int cpu = 0; cpu < system.Percpu.PossibleCpus; cpu++) Assert.True(AllZero((byte*)system.Percpu.PerCpuPtr(pcpu, cpu), 256));
        system.Percpu.FreePercpu(pcpu);
    }

    [Fact]
    public void InitOnFree_FreedPagesReadZeroInTheArenaBeforeReuse()
    {
        using var system = NewSystem(Modes(initOnFree: true));
        PageAllocator pages = system.Pages;
        foreach (int order in PageOrders)
        {
            PageFrame* page = pages.AllocPages(Gfp.Kernel, order);
            byte* p = pages.PageAddress(page);
            Fill(p, (nuint)PageFrame.PageSize << order);
            pages.FreePages(page, order);
            Assert.True(AllZero(p, (nuint)PageFrame.PageSize << order), $"order {order}");
        }
        // The per-thread handle's free path too.
        var thread = pages.ThisThread();
        PageFrame* q = thread.AllocPages(Gfp.Kernel, 0);
        Fill(pages.PageAddress(q), PageFrame.PageSize);
        thread.FreePages(q, 0);
        Assert.True(AllZero(pages.PageAddress(q), PageFrame.PageSize));
        pages.CheckConsistency();
    }

    [Fact]
    public void InitOnFree_FreedObjectsLargeKmallocVmallocAndPercpuReadZeroBeforeReuse()
    {
        using var system = NewSystem(Modes(initOnFree: true));
        SlabAllocator slab = system.Slab;
        foreach (nuint size in KmallocSizes.Concat([(nuint)20000]))
        {
            byte* p = (byte*)slab.Kmalloc(size);
            nuint usable = slab.Ksize(p);
            Fill(p, usable);
            slab.Kfree(p);
            Assert.True(AllZero(p, usable), $"kmalloc({size})");
        }
        KmemCache cache = slab.CreateCache("meminit-free", 72, flags: SlabFlags.NoMerge);
        byte* o = (byte*)cache.Alloc();
        Fill(o, 72);
        cache.Free(o);
        Assert.True(AllZero(o, 72));

        ulong va = system.Vmalloc.Vmalloc(3 * 4096);
        system.Kernel.Memset(va, Pattern, 3 * 4096);
        var frames = new nint[3];
        for (int i = 0; i < 3; i++) frames[i] = (nint)system.Vmalloc.VmallocToPage(va + (ulong)i * 4096);
        system.Vmalloc.Vfree(va);
        foreach (nint f in frames) Assert.True(AllZero(system.Pages.PageAddress((PageFrame*)f), PageFrame.PageSize));

        nint pcpu = system.Percpu.AllocPercpu(128);
        for (int cpu = 0; cpu < system.Percpu.PossibleCpus; cpu++) Fill(system.Percpu.PerCpuPtr(pcpu, cpu), 128);
        system.Percpu.FreePercpu(pcpu);
        for (int cpu = 0; cpu < system.Percpu.PossibleCpus; cpu++) Assert.True(AllZero((byte*)system.Percpu.PerCpuPtr(pcpu, cpu), 128));
    }

    [Fact]
    public void ConstructorCachesKeepTheirConstructedContents()
    {
        using var system = NewSystem(Modes(initOnAlloc: true, initOnFree: true));
        KmemCache cache = system.Slab.CreateCache("meminit-ctor", 48, flags: SlabFlags.NoMerge, ctor: obj => new Span<byte>(obj, 48).Fill(0x77));
        var objs = new nint[20];
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < objs.Length; i++)
            {
                objs[i] = (nint)cache.Alloc();
                Assert.True(new ReadOnlySpan<byte>((void*)objs[i], 48).IndexOfAnyExcept((byte)0x77) < 0, "a constructed object is not zeroed");
            }
            foreach (nint p in objs) cache.Free((void*)p);
            foreach (nint p in objs) Assert.Equal(0x77, *(byte*)p);
        }
    }

    [Fact]
    public void GfpZeroStillZeroesInEveryMode()
    {
        foreach (var checks in new[] { AllOff, Modes(initOnFree: true), Modes(initOnAlloc: true) })
        {
            using var system = NewSystem(checks);
            PageAllocator pages = system.Pages;
            for (int i = 0; i < 8; i++)
            {
                PageFrame* page = pages.AllocPages(Gfp.Kernel, 2);
                Fill(pages.PageAddress(page), 4 * 4096);
                pages.FreePages(page, 2);
                page = pages.AllocPages(Gfp.Kernel | Gfp.Zero, 2);
                Assert.True(AllZero(pages.PageAddress(page), 4 * 4096));
                pages.FreePages(page, 2);
            }
            byte* p = (byte*)system.Slab.Kmalloc(100);
            Fill(p, 100);
            system.Slab.Kfree(p);
            p = (byte*)system.Slab.Kzalloc(100);
            Assert.True(AllZero(p, 100));
            system.Slab.Kfree(p);
        }
    }

    [Fact]
    public void KfreeSensitiveZeroesTheUsableSizeWhateverTheMode()
    {
        using var system = NewSystem(AllOff);
        SlabAllocator slab = system.Slab;
        byte* p = (byte*)slab.Kmalloc(100);
        nuint ksize = slab.Ksize(p);
        Assert.Equal((nuint)128, ksize);
        Fill(p, ksize);
        slab.KfreeSensitive(p);
        Assert.True(AllZero(p, ksize));

        byte* large = (byte*)slab.Kmalloc(20000);
        nuint largeSize = slab.Ksize(large);
        Fill(large, largeSize);
        slab.KfreeSensitive(large);
        Assert.True(AllZero(large, largeSize));

        // Misuse throws and zeroes nothing.
        byte* live = (byte*)slab.Kmalloc(64);
        Fill(live, 64);
        Assert.ThrowsAny<MemoryCorruptionException>(() => slab.KfreeSensitive(live + 8));
        Assert.Equal(Pattern, live[0]);
        slab.KfreeSensitive(live);
        Assert.ThrowsAny<MemoryCorruptionException>(() => slab.KfreeSensitive(live));
        slab.KfreeSensitive(null);
    }

    [Fact]
    public void KfreeSensitiveOnARedZonedKmallocReportsNothing()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32L << 20 },
            Slab = new SlabAllocatorOptions { KmallocFlags = SlabFlags.RedZone },
        });
        byte* p = (byte*)system.Slab.Kmalloc(40);
        nuint ksize = system.Slab.Ksize(p);
        Fill(p, 40);
        system.Slab.KfreeSensitive(p);
        Assert.True(AllZero(p, ksize));
        Assert.All(system.Slab.Caches, c => Assert.Empty(c.Reports));
    }

    [Fact]
    public void KvfreeSensitiveZeroesVmallocAndKmallocMemory()
    {
        using var system = NewSystem(AllOff);
        var vmalloc = system.Vmalloc;
        const int Pages = 32; // above kvmalloc's kmalloc limit
        ulong va = vmalloc.Kvmalloc(Pages * 4096);
        Assert.True(Allocators.Vmalloc.VmallocAllocator.IsVmallocAddr(va));
        system.Kernel.Memset(va, Pattern, Pages * 4096);
        var frames = new nint[Pages];
        for (int i = 0; i < Pages; i++) frames[i] = (nint)vmalloc.VmallocToPage(va + (ulong)i * 4096);
        vmalloc.KvfreeSensitive(va);
        foreach (nint f in frames) Assert.True(AllZero(system.Pages.PageAddress((PageFrame*)f), PageFrame.PageSize));

        ulong small = vmalloc.Kvmalloc(300);
        Assert.False(Allocators.Vmalloc.VmallocAllocator.IsVmallocAddr(small));
        Fill((void*)small, 300);
        vmalloc.KvfreeSensitive(small);
        Assert.True(AllZero((byte*)small, 300));
    }
}
