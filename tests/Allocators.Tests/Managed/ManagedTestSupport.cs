using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Tests.Managed;

/// <summary>Shared set-up for the managed-face tests: a small memory system, optionally tracking owner leaks.</summary>
internal static class ManagedTestSupport
{
    /// <summary>A whole memory system on a 32 MiB arena.</summary>
    public static MemorySystem NewSystem(bool trackOwnerLeaks = false, long mebibytes = 32) => Build(trackOwnerLeaks, mebibytes, new CheckedModeOptions());

    /// <summary><see cref="NewSystem"/> with every checked mode off whatever <c>ALLOCATORS_CHECKS</c> says (zero-managed-bytes tests: KASAN walks stacks).</summary>
    public static MemorySystem NewUncheckedSystem(bool trackOwnerLeaks = false, long mebibytes = 32) => Build(trackOwnerLeaks, mebibytes, CheckedModeOptions.Parse(""));

    private static MemorySystem Build(bool trackOwnerLeaks, long mebibytes, CheckedModeOptions checks) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = mebibytes << 20, Checks = checks },
        Slab = new SlabAllocatorOptions { TrackOwnerLeaks = trackOwnerLeaks },
    });

    /// <summary>
    /// Objects of <paramref name="cache"/> still allocated. Shrinks first: a slab a thread owns counts as wholly active
    /// until it is given back, as SLUB counts a cpu slab.
    /// </summary>
    public static long Live(SlabAllocator slab, KmemCache cache)
    {
        slab.ShrinkAll();
        return cache.ActiveObjects;
    }

    /// <summary>Checks that no kmalloc object is allocated (after a shrink).</summary>
    public static void AssertNoKmallocLive(SlabAllocator slab)
    {
        slab.ShrinkAll();
        Assert.All(slab.KmallocCaches, c => Assert.Equal(0, c.ActiveObjects));
    }

    /// <summary>/proc/slabinfo after a shrink: equal before and after a refused call when it changed nothing.</summary>
    public static string Books(SlabAllocator slab)
    {
        slab.ShrinkAll();
        return slab.SlabInfo();
    }

    /// <summary>The byte written at <paramref name="index"/> of buffer number <paramref name="seed"/>: differs between neighbours and buffers.</summary>
    public static byte Pattern(int seed, int index) => (byte)(seed * 31 + index * 7 + (index >> 8));

    /// <summary>Fills <paramref name="span"/> with buffer <paramref name="seed"/>'s pattern.</summary>
    public static void Fill(Span<byte> span, int seed)
    {
        for (int i = 0; i < span.Length; i++) span[i] = Pattern(seed, i);
    }

    /// <summary>Index of the first byte of <paramref name="span"/> that is not buffer <paramref name="seed"/>'s pattern, or -1.</summary>
    public static int FirstWrong(ReadOnlySpan<byte> span, int seed)
    {
        for (int i = 0; i < span.Length; i++)
            if (span[i] != Pattern(seed, i)) return i;
        return -1;
    }
}
