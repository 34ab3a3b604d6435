using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// The hardened freelist of a non-debug cache: free pointers are stored encoded, so a stray write into a free object
/// is detected when the allocator reaches it, reported as "Freepointer corrupt", and never followed.
/// </summary>
public unsafe class SlabHardenedFreelistTests(ITestOutputHelper output)
{
    public enum Corruption { FlipHighBits, FlipLowBits, RawPointerToLiveObject, RawStackPointer, Zeroed, AllOnes }

    private sealed class Scenario : IDisposable
    {
        public readonly MemorySystem Sys = NewSystem();
        public readonly KmemCache Cache;
        public readonly Dictionary<nint, ulong> Live = new();
        public readonly List<nint> Freed = new();
        private ulong _stamps = 1;

        public Scenario()
        {
            Cache = Sys.Slab.CreateCache("hardened-64", 64);
            Assert.Equal(SlabFlags.None, Cache.Flags);
            Assert.InRange(Cache.FreePointerOffset, 0, Cache.ObjectSize - 8);

            // Three slabs' worth; free every other object so each slab holds live and free objects.
            int n = Cache.ObjectsPerSlab * 3;
            var all = new List<nint>();
            for (int i = 0; i < n; i++) all.Add((nint)Alloc());
            for (int i = 0; i < n; i += 2)
            {
                Free(all[i]);
                Freed.Add(all[i]);
            }
            Cache.Shrink(); // magazines go back: every freed object is now on its slab's freelist
            Assert.Equal(Live.Count, Cache.ActiveObjects);
        }

        public void* Alloc()
        {
            byte* p = (byte*)Cache.Alloc();
            Assert.True(p != null);
            Assert.True(Cache.Owns(p), $"0x{(nuint)p:x} handed out but not an object of the cache");
            ulong stamp = _stamps++;
            Assert.True(Live.TryAdd((nint)p, stamp), $"0x{(nuint)p:x} handed out while live");
            Stamp(p, 64, stamp);
            return p;
        }

        public void Free(nint p)
        {
            AssertStamp((byte*)p, 64, Live[p]);
            Live.Remove(p);
            Cache.Free((void*)p);
        }

        /// <summary>Set when a stuck thread may still use the system: it is then leaked rather than disposed under it.</summary>
        public bool Abandoned;

        public void Dispose()
        {
            if (!Abandoned) Sys.Dispose();
        }
    }

    private static void Corrupt(Scenario s, byte* victim, Corruption how, void* stackAddress)
    {
        ulong* fp = (ulong*)(victim + s.Cache.FreePointerOffset);
        switch (how)
        {
            case Corruption.FlipHighBits: *fp ^= 0x0000_1000_0000_0000UL; break;
            case Corruption.FlipLowBits: *fp ^= 0x8UL; break;
            case Corruption.RawPointerToLiveObject: *fp = (ulong)s.Live.Keys.First(); break;
            case Corruption.RawStackPointer: *fp = (ulong)stackAddress; break;
            case Corruption.Zeroed: *fp = 0; break;
            case Corruption.AllOnes: *fp = ulong.MaxValue; break;
        }
    }

    [Theory]
    [InlineData(Corruption.FlipHighBits)]
    [InlineData(Corruption.FlipLowBits)]
    [InlineData(Corruption.RawPointerToLiveObject)]
    [InlineData(Corruption.RawStackPointer)]
    [InlineData(Corruption.Zeroed)]
    [InlineData(Corruption.AllOnes)]
    public void AllocationNeverFollowsACorruptedFreePointer(Corruption how)
    {
        using var s = new Scenario();
        SlabReport? raised = null;
        s.Sys.Slab.CorruptionDetected += r => raised = r;
        byte* victim = (byte*)s.Freed[s.Freed.Count / 2];
        nuint victimSlab = SlabBase(s.Sys, victim);
        byte* stack = stackalloc byte[64];
        Corrupt(s, victim, how, stack);

        // Enough allocations to use up every reachable free object; the slab layer only grows when none is left.
        var reused = new HashSet<nint>();
        var freedSet = s.Freed.ToHashSet();
        int want = s.Freed.Count + 2 * s.Cache.ObjectsPerSlab;
        RunWithDeadline("allocating after the corruption", () =>
        {
            for (int i = 0; i < want; i++)
            {
                nint p = (nint)s.Alloc();
                if (freedSet.Contains(p)) reused.Add(p);
            }
        }, () => s.Abandoned = true);

        SlabReport report = Assert.Single(s.Cache.Reports);
        output.WriteLine(report.Text);
        Assert.Equal("BUG hardened-64: Freepointer corrupt", report.Title);
        Assert.Equal((nuint)victim, report.Address);
        Assert.Contains(Hex(victim), report.Text);
        Assert.Same(report, raised);
        Assert.Equal(1, s.Cache.CorruptionsFound);
        Assert.Equal(1, s.Cache.Stats.CorruptionsFound);
        Assert.Contains((nint)victim, reused);

        // The free objects behind the bad pointer are given up (never handed out); all lie in the victim's slab.
        var lost = freedSet.Except(reused).ToList();
        Assert.All(lost, p => Assert.Equal(victimSlab, SlabBase(s.Sys, (void*)p)));
        Assert.True(lost.Count < s.Cache.ObjectsPerSlab);

        // Every object handed out is intact and distinct; after freeing all, only the given-up objects remain counted.
        foreach (nint p in s.Live.Keys.ToList()) s.Free(p);
        s.Sys.Slab.ShrinkAll();
        Assert.Equal(lost.Count, s.Cache.ActiveObjects);
    }

    [Fact]
    public void ValidateFindsACorruptedFreePointerWithoutAllocating()
    {
        using var s = new Scenario();
        byte* victim = (byte*)s.Freed[1];
        *(ulong*)(victim + s.Cache.FreePointerOffset) ^= 0x0000_0400_0000_0000UL;
        var reports = s.Cache.Validate();
        foreach (var r in reports) output.WriteLine(r.Text);
        SlabReport fp = Assert.Single(reports, r => r.Problem == "Freepointer corrupt");
        Assert.Equal("BUG hardened-64: Freepointer corrupt", fp.Title);
        Assert.Equal((nuint)victim, fp.Address);
        Assert.All(reports, r => Assert.Contains(r.Problem, new[] { "Freepointer corrupt", "Wrong object count" }));
        Assert.Equal(reports.Count, s.Cache.CorruptionsFound);
        Assert.Empty(s.Cache.Validate());

        // After the repair, allocation goes on without another report and hands out only sound objects.
        for (int i = 0; i < s.Freed.Count + s.Cache.ObjectsPerSlab; i++) s.Alloc();
        Assert.Equal(reports.Count, s.Cache.CorruptionsFound);
    }

    [Fact]
    public void FreePointersAreNotStoredInTheClear()
    {
        using var s = new Scenario();
        // With an unhardened list, some free object's free pointer slot would hold the address of another free object.
        var freed = s.Freed.ToHashSet();
        foreach (nint p in s.Freed)
        {
            ulong stored = *(ulong*)((byte*)p + s.Cache.FreePointerOffset);
            Assert.DoesNotContain((nint)stored, freed);
        }
        Assert.Empty(s.Cache.Validate());
    }
}
