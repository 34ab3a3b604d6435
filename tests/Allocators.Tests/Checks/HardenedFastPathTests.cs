using Allocators.Physical;
using Allocators.Slab;
using Allocators.Tests.Threading;

namespace Allocators.Tests.Checks;

/// <summary>
/// init_on_alloc, init_on_free and slab_freelist_random run on the per-thread fast paths (<see cref="SlabCpu.Modes"/>):
/// the plain calls and the handles stay off the slow path and allocate nothing managed, and each mode's work is done
/// on every path an object takes (the thread's stack, its bitmap words, a free by another thread).
/// </summary>
public unsafe class HardenedFastPathTests
{
    private const byte Pattern = 0xA5;

    public static TheoryData<bool, bool, bool> ModeSets => new()
    {
        { true, false, false },
        { false, true, false },
        { false, false, true },
        { true, true, true },
    };

    private static bool AllZero(byte* p, int length) => new ReadOnlySpan<byte>(p, length).IndexOfAnyExcept((byte)0) < 0;

    [Theory]
    [MemberData(nameof(ModeSets))]
    public void ModesAreServedByTheThreadFastPaths(bool initOnAlloc, bool initOnFree, bool random)
    {
        // Parsed, so that no other mode comes from ALLOCATORS_CHECKS (KASAN would take every cache off the fast paths).
        string modes = string.Join(',', new[] { initOnAlloc ? "init_on_alloc" : "", initOnFree ? "init_on_free" : "", random ? "slab_freelist_random" : "" }.Where(m => m.Length > 0));
        using var system = MemInitTests.NewSystem(CheckedModeOptions.Parse(modes));
        KmemCache cache = system.Slab.CreateCache("hardened-fast", 64, flags: SlabFlags.NoMerge);
        KmemCache kmalloc64 = system.Slab.KmallocCache(64)!;
        var ptrs = new nint[256];
        void Round()
        {
            for (int i = 0; i < ptrs.Length; i++) ptrs[i] = (nint)cache.Alloc();
            foreach (nint p in ptrs) cache.Free((void*)p);
            for (int i = 0; i < ptrs.Length; i++) ptrs[i] = (nint)system.Slab.Kmalloc(64);
            foreach (nint p in ptrs) system.Slab.Kfree((void*)p);
            for (int i = 0; i < ptrs.Length; i++) cache.Free(cache.Alloc());
        }
        for (int i = 0; i < 4; i++) Round();
        KmemCacheStats before = cache.Stats, kBefore = kmalloc64.Stats;
        long least = ManagedBytes.LeastOf(3, () =>
        {
            for (int i = 0; i < 20; i++) Round();
        });
        KmemCacheStats after = cache.Stats, kAfter = kmalloc64.Stats;
        Assert.Equal(0, least);
        // 60 rounds of 512 allocations of the cache and 256 of kmalloc-64: the slow paths only when a slab runs out.
        Assert.True(after.AllocFastPath - before.AllocFastPath >= 60 * 512 * 95 / 100, $"{after.AllocFastPath - before.AllocFastPath} fast allocations");
        Assert.True(after.AllocSlowPath - before.AllocSlowPath <= 60 * 512 / 20, $"{after.AllocSlowPath - before.AllocSlowPath} slow allocations");
        Assert.True(after.FreeFastPath - before.FreeFastPath >= 60 * 512 * 95 / 100, $"{after.FreeFastPath - before.FreeFastPath} fast frees");
        Assert.True(kAfter.AllocFastPath - kBefore.AllocFastPath >= 60 * 256 * 95 / 100);
    }

    [Fact]
    public void InitOnAllocZeroesWhatTheStackAndTheHandleHandBack()
    {
        using var system = MemInitTests.NewSystem(CheckedModeOptions.Parse("init_on_alloc"));
        KmemCache cache = system.Slab.CreateCache("hardened-stack", 96, flags: SlabFlags.NoMerge);
        byte* p = (byte*)cache.Alloc();
        new Span<byte>(p, 96).Fill(Pattern);
        cache.Free(p);
        byte* q = (byte*)cache.Alloc();
        Assert.True(p == q, "init_on_alloc alone keeps the thread's stack: the object freed last comes back first");
        Assert.True(AllZero(q, 96));
        new Span<byte>(q, 96).Fill(Pattern);
        KmemCacheThread handle = cache.ThisThread();
        handle.Free(q);
        byte* r = (byte*)handle.Alloc();
        Assert.True(q == r);
        Assert.True(AllZero(r, 96));
        // kmalloc zeroes its whole object, not only the bytes asked for: Ksize may hand out the rest.
        byte* k = (byte*)system.Slab.Kmalloc(64);
        new Span<byte>(k, 64).Fill(Pattern);
        system.Slab.Kfree(k);
        byte* k2 = (byte*)system.Slab.Kmalloc(40);
        Assert.True(k == k2);
        Assert.True(AllZero(k2, (int)system.Slab.Ksize(k2)));
        handle.Free(r);
        system.Slab.Kfree(k2);
    }

    [Fact]
    public void InitOnFreeZeroesOnTheOwnersAndOtherThreadsFrees()
    {
        using var system = MemInitTests.NewSystem(CheckedModeOptions.Parse("init_on_free"));
        KmemCache cache = system.Slab.CreateCache("hardened-free", 128, flags: SlabFlags.NoMerge);
        var objects = new nint[64];
        for (int i = 0; i < objects.Length; i++)
        {
            objects[i] = (nint)cache.Alloc();
            new Span<byte>((void*)objects[i], 128).Fill(Pattern);
        }
        // Half freed by their owner (the fast path), half by another thread (into the slab's remote bitmap).
        for (int i = 0; i < objects.Length; i += 2) cache.Free((void*)objects[i]);
        var other = new Thread(() =>
        {
            for (int i = 1; i < objects.Length; i += 2) cache.Free((void*)objects[i]);
        });
        other.Start();
        other.Join();
        foreach (nint o in objects) Assert.True(AllZero((byte*)o, 128), $"0x{o:x}");
        // A refused double free writes nothing into the object it names.
        byte* live = (byte*)cache.Alloc();
        new Span<byte>(live, 128).Fill(Pattern);
        cache.Free(live);
        Assert.Throws<Common.MemoryCorruptionException>(() => cache.Free(live));
        byte* again = (byte*)cache.Alloc();
        new Span<byte>(again, 128).Fill(Pattern);
        Assert.Throws<Common.MemoryCorruptionException>(() => cache.Free(objects[0] == (nint)again ? (void*)objects[2] : (void*)objects[0]));
        Assert.Equal(-1, new Span<byte>(again, 128).IndexOfAnyExcept(Pattern));
        cache.Free(again);
        system.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
    }

    [Fact]
    public void RandomOrderThroughTheHandleIsNotLastInFirstOut()
    {
        using var system = MemInitTests.NewSystem(CheckedModeOptions.Parse("slab_freelist_random"));
        KmemCache cache = system.Slab.CreateCache("hardened-random", 64, flags: SlabFlags.NoMerge);
        KmemCacheThread handle = cache.ThisThread();
        var ptrs = new nint[200];
        for (int i = 0; i < ptrs.Length; i++) ptrs[i] = (nint)handle.Alloc();
        // A fresh slab's objects do not come out in address order.
        Assert.True(ptrs.Take(64).Zip(ptrs.Skip(1).Take(63)).Count(x => x.Second == x.First + 64) < 16);
        foreach (nint p in ptrs) handle.Free((void*)p);
        var again = new nint[100];
        for (int i = 0; i < again.Length; i++) again[i] = (nint)handle.Alloc();
        Assert.True(ptrs.Reverse().Take(100).Zip(again).Count(x => x.First == x.Second) < 20);
        foreach (nint p in again) handle.Free((void*)p);
        system.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        Assert.Empty(cache.Validate());
    }
}
