using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Kfence;
using Allocators.Physical;
using Allocators.Slab;
using Allocators.Tests.Cli;
using Allocators.Tests.Threading;

namespace Allocators.Tests.Kfence;

/// <summary>
/// KFENCE (guarded sampling): sampled objects sit between PROT_NONE guard pages, canaries catch writes into the rest of
/// their page at free, misuse of pool objects is refused, and a raw-pointer overrun, underrun or use after free kills a
/// child process with KFENCE's report naming the object.
/// </summary>
public sealed unsafe class KfenceTests
{
    private const int PageSize = PageFrame.PageSize;

    /// <summary>A system whose timer never fires during a test: samples come only from <see cref="Kfence.Arm"/>.</summary>
    private static MemorySystem NewSystem(int objects = 15, int intervalMs = 10_000_000, ArenaBacking backing = ArenaBacking.NativeMemory) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions
        {
            Size = 32L << 20,
            Backing = backing,
            Checks = CheckedModeOptions.Parse($"kfence.sample_interval={intervalMs},kfence.num_objects={objects}"),
        },
    });

    /// <summary>Arms and allocates until a sample lands where <paramref name="want"/> says (left: at its page's start).</summary>
    private static byte* Sampled(MemorySystem system, nuint size, bool? left = null)
    {
        var kfence = system.Slab.Kfence!;
        var others = new List<nint>();
        try
        {
            for (int i = 0; i < 200; i++)
            {
                kfence.Arm();
                var p = (byte*)system.Slab.Kmalloc(size);
                if (kfence.Contains(p))
                {
                    if (left == null || (((nuint)p & (PageSize - 1)) == 0) == left) return p;
                    system.Slab.Kfree(p);
                }
                else others.Add((nint)p);
            }
        }
        finally
        {
            foreach (nint p in others) system.Slab.Kfree((void*)p);
        }
        throw new InvalidOperationException("no sample in 200 armed allocations");
    }

    [Fact]
    public void ArmedAllocationComesFromThePoolAtAPageEdgeAndWorks()
    {
        using var system = NewSystem();
        var kfence = system.Slab.Kfence!;
        for (int i = 0; i < 20; i++)
        {
            byte* p = Sampled(system, 100);
            nuint inPage = (nuint)p & (PageSize - 1);
            Assert.True(inPage == 0 || inPage + 100 > PageSize - 8, $"object at page offset {inPage} is at neither edge");
            Assert.Equal((nuint)100, system.Slab.Ksize(p));
            for (int b = 0; b < 100; b++) p[b] = (byte)(b + i);
            for (int b = 0; b < 100; b++) Assert.Equal((byte)(b + i), p[b]);
            system.Slab.Kfree(p);
        }
        Assert.Equal(20, kfence.Allocations);
        Assert.Equal(20, kfence.Frees);
        Assert.Equal(0, kfence.InUse);
        Assert.Empty(kfence.Reports);
    }

    [Fact]
    public void SampledObjectsFollowInitOnAllocAndInitOnFreeAndKfreeSensitive()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 32L << 20,
                Checks = new CheckedModeOptions { KfenceSampleInterval = 10_000_000, KfenceObjects = 3, InitOnAlloc = true, InitOnFree = true },
            },
        });
        var kfence = system.Slab.Kfence!;
        byte* p = Sampled(system, 64);
        Assert.Equal(-1, new Span<byte>(p, 64).IndexOfAnyExcept((byte)0)); // init_on_alloc
        new Span<byte>(p, 64).Fill(0x5a);
        system.Slab.Kfree(p);
        Assert.Equal(0, kfence.InUse);
        byte* q = Sampled(system, 64); // three slots, reused oldest first: one of these is on p's page again
        byte* r = Sampled(system, 64);
        byte* s = Sampled(system, 64);
        foreach (byte* x in new[] { q, r, s }) Assert.Equal(-1, new Span<byte>(x, 64).IndexOfAnyExcept((byte)0));
        new Span<byte>(q, 64).Fill(0x77);
        system.Slab.KfreeSensitive(q);
        system.Slab.Kfree(r);
        system.Slab.Kfree(s);
        Assert.Equal(0, kfence.InUse);
    }

    [Fact]
    public void UnarmedAllocationsNeverComeFromThePool()
    {
        using var system = NewSystem();
        var kfence = system.Slab.Kfence!;
        var ps = new List<nint>();
        for (int i = 0; i < 2000; i++) ps.Add((nint)system.Slab.Kmalloc((nuint)(8 + i % 900)));
        Assert.DoesNotContain(ps, p => kfence.Contains((void*)p));
        foreach (nint p in ps) system.Slab.Kfree((void*)p);
        Assert.Equal(0, kfence.Allocations);
    }

    [Fact]
    public void CanaryOverwriteIsReportedAtFreeWithTheAddress()
    {
        using var system = NewSystem();
        var kfence = system.Slab.Kfence!;
        var seen = new List<SlabReport>();
        system.Slab.CorruptionDetected += seen.Add;
        byte* p = Sampled(system, 40, left: true);
        p[40] = 0x42; // one byte past the object, still in its page: the canary
        system.Slab.Kfree(p);
        KfenceReport report = Assert.Single(kfence.Reports);
        Assert.Equal("memory corruption", report.Problem);
        Assert.Equal("kmalloc-64", report.Cache);
        Assert.Equal((nuint)(p + 40), report.Address);
        Assert.Contains("BUG: KFENCE: memory corruption", report.Text);
        Assert.Contains($"0x{(nuint)(p + 40):x}", report.Text);
        Assert.Contains("size=40", report.Text);
        Assert.Single(seen);
        Assert.Equal(1, kfence.BugsFound);
        Assert.Equal(0, kfence.InUse);
    }

    [Fact]
    public void DoubleAndInteriorFreesAreRefusedAndChangeNothing()
    {
        using var system = NewSystem();
        var kfence = system.Slab.Kfence!;
        byte* p = Sampled(system, 64);
        var e = Assert.Throws<MemoryCorruptionException>(() => system.Slab.Kfree(p + 8));
        Assert.Contains($"0x{(nuint)(p + 8):x}", e.Message);
        Assert.Equal(1, kfence.InUse);
        p[0] = 7;
        Assert.Equal(7, p[0]); // still mapped and live
        system.Slab.Kfree(p);
        e = Assert.Throws<MemoryCorruptionException>(() => system.Slab.Kfree(p));
        Assert.Contains("double free", e.Message);
        Assert.Equal(1, kfence.Frees);
        Assert.Equal(0, kfence.InUse);
        Assert.Throws<MemoryCorruptionException>(() => system.Slab.Ksize(p));
    }

    [Fact]
    public void CacheObjectsAreSampledAndMustGoBackToTheirCache()
    {
        using var system = NewSystem();
        var kfence = system.Slab.Kfence!;
        var cache = system.Slab.CreateCache("kfence-test", 200);
        var other = system.Slab.CreateCache("kfence-other", 200);
        void* obj = null;
        for (int i = 0; i < 200 && obj == null; i++)
        {
            kfence.Arm();
            void* q = cache.Alloc();
            if (kfence.Contains(q)) obj = q; else cache.Free(q);
        }
        Assert.True(obj != null);
        Assert.Throws<MemoryCorruptionException>(() => other.Free(obj));
        Assert.Equal(1, kfence.InUse);
        cache.Free(obj);
        Assert.Equal(0, kfence.InUse);
        other.Destroy();
        cache.Destroy();
    }

    [Fact]
    public void KreallocMovesASampledObjectKeepingItsBytes()
    {
        using var system = NewSystem();
        byte* p = Sampled(system, 50);
        for (int b = 0; b < 50; b++) p[b] = (byte)(b * 3);
        var q = (byte*)system.Slab.Krealloc(p, 30);
        Assert.False(system.Slab.Kfence!.Contains(q) && q == p);
        for (int b = 0; b < 30; b++) Assert.Equal((byte)(b * 3), q[b]);
        system.Slab.Kfree(q);
        Assert.Equal(0, system.Slab.Kfence.InUse);
    }

    [Fact]
    public void AFullPoolLeavesAllocationsToTheSlabs()
    {
        using var system = NewSystem(objects: 3);
        var kfence = system.Slab.Kfence!;
        var ps = new List<nint>();
        for (int i = 0; i < 10; i++)
        {
            kfence.Arm();
            ps.Add((nint)system.Slab.Kmalloc(128));
        }
        Assert.Equal(3, ps.Count(p => kfence.Contains((void*)p)));
        Assert.Equal(3, kfence.InUse);
        foreach (nint p in ps) system.Slab.Kfree((void*)p);
        Assert.Equal(0, kfence.InUse);
    }

    [Fact]
    public void TheTimerSamplesWithoutAnyCall()
    {
        using var system = NewSystem(intervalMs: 1);
        var kfence = system.Slab.Kfence!;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (kfence.Allocations == 0 && DateTime.UtcNow < deadline)
        {
            void* p = system.Slab.Kmalloc(32);
            system.Slab.Kfree(p);
            Thread.Sleep(0);
        }
        Assert.True(kfence.Allocations > 0);
    }

    [Fact]
    public void FastPathsAllocateNoManagedBytesBetweenSamples()
    {
        using var system = NewSystem();
        AssertNoManagedBytesBetweenSamples(system);
    }

    /// <summary>kmalloc(64)/kfree pairs allocate no managed bytes in at least one of five windows of 100,000.</summary>
    private static void AssertNoManagedBytesBetweenSamples(MemorySystem system)
    {
        for (int i = 0; i < 1000; i++) system.Slab.Kfree(system.Slab.Kmalloc(64));
        // Sample requests are process-wide: another test's system arming its pool sends this thread through a slow
        // path now and then. A window with no allocation at all shows the fast paths allocate nothing.
        Assert.Equal(0, ManagedBytes.LeastOf(5, () =>
        {
            for (int i = 0; i < 100_000; i++) system.Slab.Kfree(system.Slab.Kmalloc(64));
        }));
    }

    [Fact]
    public void ThreadsSharingSampledObjectsLoseNothing()
    {
        using var system = NewSystem(objects: 31);
        var kfence = system.Slab.Kfence!;
        system.Pages.DrainAllPages();
        string buddyBefore = system.Pages.BuddyInfo();
        var queue = new Allocators.Tests.Threading.HandOffQueue<(nint P, int Size, byte Tag)>(256);
        int bad = 0;
        bool stop = false;
        var armer = new Thread(() => { while (!Volatile.Read(ref stop)) { kfence.Arm(); Thread.Sleep(1); } });
        var producers = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            for (int i = 0; i < 20_000; i++)
            {
                int size = 1 + rng.Next(PageSize);
                var p = (byte*)system.Slab.Kmalloc((nuint)size);
                byte tag = (byte)rng.Next(256);
                new Span<byte>(p, size).Fill(tag);
                queue.Add(((nint)p, size, tag));
            }
        })).ToArray();
        var consumer = new Thread(() =>
        {
            foreach (var (p, size, tag) in queue.GetConsumingEnumerable())
            {
                if (new Span<byte>((void*)p, size).IndexOfAnyExcept(tag) >= 0) Interlocked.Increment(ref bad);
                system.Slab.Kfree((void*)p);
            }
        });
        armer.Start();
        consumer.Start();
        foreach (var t in producers) t.Start();
        foreach (var t in producers) t.Join();
        queue.CompleteAdding();
        consumer.Join();
        Volatile.Write(ref stop, true);
        armer.Join();
        Assert.Equal(0, bad);
        Assert.True(kfence.Allocations > 0);
        Assert.Equal(kfence.Allocations, kfence.Frees);
        Assert.Equal(0, kfence.InUse);
        Assert.Empty(kfence.Reports);
        system.Slab.ShrinkAll();
        system.Pages.DrainAllPages();
        Assert.Equal(buddyBefore, system.Pages.BuddyInfo());
    }

    [Fact]
    public void DisposeGivesThePoolBack()
    {
        using var system = NewSystem(backing: ArenaBacking.MemFd);
        var kfence = system.Slab.Kfence!;
        byte* left = Sampled(system, 10); // left allocated: dropped with the pool
        system.Pages.DrainAllPages();
        long free = system.Pages.Zones.Sum(z => z.FreePages);
        kfence.Dispose();
        left[0] = 1; // the pool's pages are accessible again (free pages, as far as the arena goes)
        system.Pages.DrainAllPages();
        Assert.Equal(free + 32, system.Pages.Zones.Sum(z => z.FreePages)); // 2 x 15 + 1 pages, rounded to a block
    }

    /// <summary>A system sampling one allocation in about <paramref name="rate"/> by count, with no timer.</summary>
    private static MemorySystem NewCountingSystem(int rate, int objects = 31) => new(new MemorySystemOptions
    {
        Physical = new PhysicalMemoryOptions
        {
            Size = 32L << 20,
            Checks = CheckedModeOptions.Parse($"kfence.sample_rate={rate},kfence.num_objects={objects}"),
        },
    });

    [Fact]
    public void CountedSamplingTakesAboutOneAllocationInNAtNoFixedStride()
    {
        using var system = NewCountingSystem(rate: 100);
        var kfence = system.Slab.Kfence!;
        Assert.Equal(100, kfence.SampleRate);
        var cache = system.Slab.CreateCache<long>("counted");
        var gaps = new List<int>();
        int since = 0;
        const int Pairs = 100_000;
        for (int i = 0; i < Pairs; i++)
        {
            // Plain kmalloc, a typed cache and a thread handle all count.
            void* p = (i % 3) switch { 0 => system.Slab.Kmalloc(48), 1 => cache.Alloc(), _ => system.Slab.ThisThread().Kmalloc(48) };
            since++;
            if (kfence.Contains(p))
            {
                gaps.Add(since);
                since = 0;
            }
            if (i % 3 == 1) cache.Free((long*)p); else system.Slab.Kfree(p);
        }
        // Two entries (kmalloc-64, reached plainly and through the handle, and the cache) draw counts of mean 100: about
        // 1,000 samples in 100,000 allocations.
        Assert.InRange(kfence.Allocations, 700, 1300);
        Assert.Equal(kfence.Allocations, kfence.Frees);
        Assert.True(gaps.Distinct().Count() > 20, $"samples fell at only {gaps.Distinct().Count()} distinct gaps");
        Assert.Empty(kfence.Reports);
        cache.Dispose();
    }

    [Fact]
    public void CountedSamplingFollowsTheOtherHardeningModes()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 32L << 20,
                Checks = CheckedModeOptions.Parse("kfence.sample_rate=10,kfence.num_objects=31,init_on_alloc,slab_freelist_random"),
            },
        });
        var kfence = system.Slab.Kfence!;
        int sampled = 0;
        for (int i = 0; i < 2000; i++)
        {
            var p = (byte*)system.Slab.Kmalloc(40);
            Assert.Equal(0, new Span<byte>(p, 40).IndexOfAnyExcept((byte)0) >= 0 ? 1 : 0);
            new Span<byte>(p, 40).Fill(0xAB);
            if (kfence.Contains(p)) sampled++;
            system.Slab.Kfree(p);
        }
        Assert.InRange(sampled, 100, 400);
    }

    [Fact]
    public void CountedSamplingReachesCachesTheFastPathsDoNotServe()
    {
        using var system = NewCountingSystem(rate: 50);
        var kfence = system.Slab.Kfence!;
        var cache = system.Slab.CreateCache("debug-counted", 40, flags: SlabFlags.Debug);
        for (int i = 0; i < 10_000; i++) cache.Free(cache.Alloc());
        Assert.InRange(kfence.Allocations, 100, 400);
        Assert.Equal(kfence.Allocations, kfence.Frees);
        Assert.Empty(kfence.Reports);
        cache.Destroy();
    }

    [Fact]
    public void CountedSamplingLeavesTypesafeByRcuAndLargerThanAPageCachesAlone()
    {
        using var system = NewCountingSystem(rate: 1);
        var kfence = system.Slab.Kfence!;
        var rcu = system.Slab.CreateCache("rcu-counted", 64, flags: SlabFlags.TypesafeByRcu);
        for (int i = 0; i < 100; i++) rcu.Free(rcu.Alloc());
        for (int i = 0; i < 100; i++) system.Slab.Kfree(system.Slab.Kmalloc(8192));
        Assert.Equal(0, kfence.Allocations);
        // At rate 1 every allocation of a cache it samples is chosen, from the one after the thread's first (which binds
        // the thread's entry in the slow path).
        int sampled = 0;
        for (int i = 0; i < 5; i++)
        {
            void* p = system.Slab.Kmalloc(64);
            if (kfence.Contains(p)) sampled++;
            system.Slab.Kfree(p);
        }
        Assert.True(sampled >= 4, $"{sampled} of 5 sampled");
        rcu.Destroy();
    }

    [Fact]
    public void AnotherSystemsTimerDoesNotSampleACountingSystem()
    {
        using var timed = NewSystem();
        using var counting = NewCountingSystem(rate: 1_000_000);
        for (int i = 0; i < 10; i++)
        {
            timed.Slab.Kfence!.Arm(); // sets the timed sample bit in every thread's context, this one's too
            void* p = counting.Slab.Kmalloc(64);
            Assert.False(counting.Slab.Kfence!.Contains(p));
            counting.Slab.Kfree(p);
        }
        Assert.Equal(0, counting.Slab.Kfence!.Allocations);
        counting.Slab.Kfence.Arm(); // a counting pool is not armed by hand either
        void* q = counting.Slab.Kmalloc(64);
        Assert.False(counting.Slab.Kfence.Contains(q));
        counting.Slab.Kfree(q);
    }

    [Theory]
    [InlineData("kfence.sample_rate=50")]
    [InlineData("kfence.sample_rate=50,init_on_free,slab_freelist_random")]
    public void ARateGivenAtBootIsCountedInlineBesideTheOtherModes(string boot)
    {
        if (!OperatingSystem.IsLinux()) return;
        var psi = CliRunner.StartInfo("kfence-fault", "--access", "count");
        psi.Environment[CheckedModeOptions.EnvironmentVariable] = boot;
        var (code, stdout, stderr) = CliRunner.RunProcess(psi, TimeSpan.FromSeconds(60));
        Assert.True(code == 0, stderr);
        var fields = stdout.Split('\n').First(l => l.StartsWith("samples ", StringComparison.Ordinal)).Split(' ');
        Assert.InRange(int.Parse(fields[1]), 200, 700); // 20,000 allocations at 1 in 50
        Assert.Equal("True", fields[3]);                 // the static key is on
        Assert.Equal("0", fields[5]);                    // init_on_free still zeroed every freed object
    }

    [Fact]
    public void ASampleRequestSurvivesADrainOfTheThreadsCache()
    {
        using var system = NewSystem();
        var kfence = system.Slab.Kfence!;
        var cache = system.Slab.KmallocCache(64)!;
        void* held = system.Slab.Kmalloc(64); // the thread's entry holds a slab, so the drain below takes its context
        system.Slab.Kfree(system.Slab.Kmalloc(64));
        kfence.Arm();
        cache.Validate(); // drains every thread holding slabs of the cache, this one included
        void* p = system.Slab.Kmalloc(64);
        Assert.True(kfence.Contains(p), "the drain wiped the sample request");
        system.Slab.Kfree(p);
        system.Slab.Kfree(held);
    }

    [Fact]
    public void SampleIntervalAndRateAreRefusedTogether()
    {
        var e = Assert.Throws<ArgumentException>(() => new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16L << 20, Checks = CheckedModeOptions.Parse("kfence.sample_interval=100,kfence.sample_rate=10") },
        }));
        Assert.Contains("set one of them", e.Message);
    }

    [Fact]
    public void CountedSamplingFastPathsAllocateNoManagedBytesBetweenSamples()
    {
        using var system = NewCountingSystem(rate: 1_000_000);
        AssertNoManagedBytesBetweenSamples(system);
    }

    public static TheoryData<string, string> Accesses => new()
    {
        { "overrun", "BUG: KFENCE: out-of-bounds write at 0x" },
        { "underrun", "BUG: KFENCE: out-of-bounds read at 0x" },
        { "use-after-free", "BUG: KFENCE: use-after-free read at 0x" },
    };

    [Theory]
    [MemberData(nameof(Accesses))]
    public void ARawPointerBadAccessKillsTheProcessWithKfencesReport(string access, string title)
        => BadAccessKillsTheProcess(access, title, null);

    [Fact]
    public void ARawPointerOverrunOfACountedSampleKillsTheProcessWithKfencesReport()
        => BadAccessKillsTheProcess("overrun", "BUG: KFENCE: out-of-bounds write at 0x", null, "--sample-rate", "50");

    [Fact]
    public void ARateGivenAtBootIsCountedInlineAndSamplesTheSame()
        => BadAccessKillsTheProcess("overrun", "BUG: KFENCE: out-of-bounds write at 0x", "kfence.sample_rate=50", "--sample-rate", "50");

    [Fact]
    public void AnIntervalSetInCodeReplacesARateFromTheEnvironment()
        => BadAccessKillsTheProcess("overrun", "BUG: KFENCE: out-of-bounds write at 0x", "kfence.sample_rate=50");

    private static void BadAccessKillsTheProcess(string access, string title, string? boot = null, params string[] extra)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64) return;
        var psi = CliRunner.StartInfo(["kfence-fault", "--access", access, .. extra]);
        // The child reads ALLOCATORS_CHECKS as its boot parameters: only the one asked for (or none), whatever this run has.
        if (boot != null) psi.Environment[CheckedModeOptions.EnvironmentVariable] = boot;
        else psi.Environment.Remove(CheckedModeOptions.EnvironmentVariable);
        var (code, stdout, stderr) = CliRunner.RunProcess(psi, TimeSpan.FromSeconds(60));
        Assert.NotEqual(0, code);
        var line = stdout.Split('\n').First(l => l.StartsWith("object 0x", StringComparison.Ordinal));
        nuint obj = nuint.Parse(line.Split(' ')[1].AsSpan(2), System.Globalization.NumberStyles.HexNumber);
        nuint expected = access switch
        {
            "overrun" => (obj + 100 + PageSize - 1) & ~(nuint)(PageSize - 1), // the guard page's first byte
            "underrun" => obj - 1,
            _ => obj,
        };
        Assert.Contains($"{title}{expected:x16}", stderr);
        Assert.Contains($"kfence-#", stderr);
        Assert.Contains($"0x{obj:x}-0x{obj + 99:x}, size=100, cache=kmalloc-128", stderr);
        Assert.Contains("allocated by task", stderr);
        Assert.Contains("KfenceFaultCommand.Execute", stderr);
        if (access == "use-after-free") Assert.Contains("freed by task", stderr);
        Assert.Contains("System.AccessViolationException", stderr);
        Assert.DoesNotContain("no fault", stdout);
    }
}
