using Allocators.Diagnostics;
using Allocators.Physical;
using Allocators.Slab;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// The per-thread handles' free path: <see cref="SlabLocator"/> (virt_to_slab from the flat frame map, tail pages of
/// compound slabs included) and the one-multiply object-start test that replaces a division.
/// </summary>
public unsafe class SlabLocatorTests
{
    [Theory]
    [InlineData(8, 0)]
    [InlineData(24, 0)]
    [InlineData(40, 8)]
    [InlineData(96, 0)]
    [InlineData(136, 0)]
    [InlineData(700, 64)]
    [InlineData(3000, 0)]
    [InlineData(4096, 0)]
    [InlineData(5000, 0)]
    public void EveryObjectIsFoundAndEveryOtherOffsetRefused(int size, int align)
    {
        using var sys = NewSystem(64);
        string baseline = Baseline(sys);
        var cache = sys.Slab.CreateCache($"locate-{size}", size, align);
        KmemCacheData* d = cache.Data;
        var memory = sys.Pages.Memory;
        var locator = new SlabLocator(memory);
        var c = cache.ThisThread();
        var objects = new List<nint>();
        for (int i = 0; i < cache.ObjectsPerSlab * 3 + 1; i++) objects.Add((nint)c.Alloc());

        foreach (nint p in objects)
        {
            SlabAddress a = locator.Find((void*)p);
            PageFrame* expected = KmemCache.SlabOf(memory, (void*)p);
            Assert.True(a.Slab == expected, $"slab of 0x{p:x}");
            Assert.Equal((nuint)p, (nuint)memory.PageAddress(a.Slab) + a.Offset);
        }
        Assert.True(locator.Find(null).Slab == SlabLocator.NotASlab);
        byte* stack = stackalloc byte[8];
        Assert.True(locator.Find(stack).Slab == SlabLocator.NotASlab);
        Assert.True(SlabPage.Cache(SlabLocator.NotASlab) == SlabLocator.NoCache);
        Assert.Equal(-1, SlabLocator.NoCache->KmallocIndex);

        // Every byte offset of a slab and past it, against the division the multiply replaces.
        PageFrame* slab = KmemCache.SlabOf(memory, (void*)objects[0]);
        nuint pad = (nuint)d->RedLeftPad, slot = (nuint)d->Size, end = (nuint)d->Objects * slot;
        for (nuint offset = 0; offset < end + 2 * slot; offset++)
        {
            bool start = offset >= pad && offset - pad < end && (offset - pad) % slot == 0;
            if (start != KmemCache.IsFreeableObject(d, slab, offset, (void*)1)) Assert.Fail($"offset {offset}: expected {start}");
        }

        // Interior pointers through the handle, in head and tail pages alike.
        foreach (nint p in objects.Where((_, i) => i % 7 == 0))
        {
            foreach (int delta in new[] { 1, size / 2 + 1, size - 1 })
            {
                var e = Assert.Throws<MemoryCorruptionException>(() => cache.ThisThread().Free((byte*)p + delta));
                Assert.Contains("interior pointer", e.Message);
            }
        }
        var h = cache.ThisThread();
        foreach (nint p in objects) h.Free((void*)p);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }
}
