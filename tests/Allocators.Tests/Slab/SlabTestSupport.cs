using System.Runtime.ExceptionServices;
using Allocators.Physical;
using Allocators.Slab;

namespace Allocators.Tests.Slab;

/// <summary>Shared set-up for the slab tests: small arenas and the "everything went back" check.</summary>
internal static unsafe class SlabTestSupport
{
    /// <summary>
    /// A whole memory system on a small arena; kmalloc caches get <paramref name="kmallocFlags"/> (slub_debug) and
    /// the slot sizes of <paramref name="classes"/>.
    /// </summary>
    public static MemorySystem NewSystem(long mebibytes = 32, SlabFlags kmallocFlags = SlabFlags.None,
        KmallocSizeClasses classes = KmallocSizeClasses.Kernel) => Build(mebibytes, kmallocFlags, classes, new CheckedModeOptions());

    /// <summary>
    /// <see cref="NewSystem"/> with every checked mode off whatever <c>ALLOCATORS_CHECKS</c> says: for tests of what the
    /// modes change on purpose (the per-thread fast paths, immediate reuse, slot layout, zero managed bytes).
    /// </summary>
    public static MemorySystem NewUncheckedSystem(long mebibytes = 32, SlabFlags kmallocFlags = SlabFlags.None,
        KmallocSizeClasses classes = KmallocSizeClasses.Kernel) => Build(mebibytes, kmallocFlags, classes, CheckedModeOptions.Parse(""));

    private static MemorySystem Build(long mebibytes, SlabFlags kmallocFlags, KmallocSizeClasses classes, CheckedModeOptions checks) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions { Size = mebibytes << 20, Checks = checks },
        Slab = new SlabAllocatorOptions { KmallocFlags = kmallocFlags, KmallocSizeClasses = classes },
    });

    /// <summary>Drains the per-thread page lists and returns /proc/buddyinfo: the state every test must come back to.</summary>
    public static string Baseline(MemorySystem sys)
    {
        sys.Pages.DrainAllPages();
        return sys.Pages.BuddyInfo();
    }

    /// <summary>Gives every cached object and page back and checks the buddy lists equal <paramref name="baseline"/>.</summary>
    public static void AssertBackToBaseline(MemorySystem sys, string baseline)
    {
        sys.Slab.ShrinkAll();
        sys.Pages.DrainAllPages();
        Assert.Equal(baseline, sys.Pages.BuddyInfo());
    }

    /// <summary>Shrinks everything, checks <paramref name="cache"/> holds no object, destroys it and checks the buddy lists equal <paramref name="baseline"/>.</summary>
    public static void AssertEmptiedBackToBaseline(MemorySystem sys, KmemCache cache, string baseline)
    {
        sys.Slab.ShrinkAll();
        Assert.Equal(0, cache.ActiveObjects);
        cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    /// <summary>
    /// Runs <paramref name="body"/> on a background thread and fails the test if it has not finished within
    /// <paramref name="seconds"/>: for code that, broken, would loop forever instead of failing. On timeout
    /// <paramref name="onTimeout"/> runs first (e.g. to keep the memory system the stuck thread uses from being disposed).
    /// Exceptions from the body are rethrown on the test thread.
    /// </summary>
    public static void RunWithDeadline(string what, Action body, Action onTimeout, int seconds = 20)
    {
        Exception? error = null;
        var worker = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { error = e; }
        }) { IsBackground = true };
        worker.Start();
        if (!worker.Join(TimeSpan.FromSeconds(seconds)))
        {
            onTimeout();
            Assert.Fail($"{what} did not finish within {seconds} s");
        }
        if (error != null) ExceptionDispatchInfo.Capture(error).Throw();
    }

    /// <summary>Start of the slab (head page) that holds <paramref name="p"/>.</summary>
    public static nuint SlabBase(MemorySystem sys, void* p)
    {
        PageFrame* page = sys.Pages.VirtToPage(p);
        Assert.True(page != null, "address is not in the arena");
        return (nuint)sys.Pages.PageAddress(PageFrame.CompoundHead(page));
    }

    /// <summary>"@offset=" value SLUB prints for a byte: its distance from the slab start.</summary>
    public static string OffsetText(MemorySystem sys, void* slabObject, void* badByte)
        => $"@offset={(nuint)badByte - SlabBase(sys, slabObject)}.";

    public static string Hex(void* p) => $"0x{(nuint)p:x}";

    /// <summary>Every byte of [p, p+length) equals <paramref name="value"/>; reports the first difference.</summary>
    public static void AssertBytes(byte* p, int length, byte value, string what)
    {
        for (int i = 0; i < length; i++)
        {
            if (p[i] != value)
                Assert.Fail($"{what}: byte {i} is 0x{p[i]:x2}, expected 0x{value:x2}");
        }
    }

    /// <summary>Runs <paramref name="body"/> on a fresh thread (its own thread caches) with a deadline, rethrowing its failure here.</summary>
    public static void RunOnNewThread(Action body) => RunWithDeadline("worker thread", body, () => { });

    /// <summary>
    /// Fills an object with a pattern derived from <paramref name="stamp"/>: byte i depends on byte (i mod 8) of the
    /// stamp and on i, so every prefix of a pattern is the pattern of a shorter object (krealloc keeps prefixes).
    /// </summary>
    public static void Stamp(byte* p, int length, ulong stamp)
    {
        for (int i = 0; i < length; i++) p[i] = (byte)((stamp >> ((i & 7) * 8)) + (ulong)(i >> 3));
    }

    /// <summary>Checks the first <paramref name="length"/> bytes of a pattern written by <see cref="Stamp"/>.</summary>
    public static void AssertStamp(byte* p, int length, ulong stamp)
    {
        for (int i = 0; i < length; i++)
        {
            byte expected = (byte)((stamp >> ((i & 7) * 8)) + (ulong)(i >> 3));
            if (p[i] != expected)
                Assert.Fail($"object 0x{(nuint)p:x} (stamp 0x{stamp:x}, {length} bytes): byte {i} is 0x{p[i]:x2}, expected 0x{expected:x2}");
        }
    }
}
