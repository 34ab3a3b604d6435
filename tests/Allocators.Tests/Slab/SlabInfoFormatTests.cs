using System.Globalization;
using System.Text.RegularExpressions;
using Allocators.Slab;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// /proc/slabinfo version 2.1 exactly as SLUB prints it, with values that agree with each cache's statistics,
/// and the statistics themselves after known sequences.
/// </summary>
public unsafe partial class SlabInfoFormatTests(ITestOutputHelper output)
{
    private const string Header0 = "slabinfo - version: 2.1";
    private const string Header1 =
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>";

    /// <summary>A printf %Nlu field: right-aligned in N columns, or wider without padding.</summary>
    private static string Num(int width)
    {
        var alternatives = Enumerable.Range(1, width - 1).Select(digits => $" {{{width - digits}}}\\d{{{digits}}}").ToList();
        alternatives.Add($"\\d{{{width},}}");
        return "(" + string.Join("|", alternatives) + ")";
    }

    private static readonly Regex Line = new(
        "^(?<name>\\S+)(?<pad> *) " +
        $"(?<active>{Num(6)}) (?<num>{Num(6)}) (?<size>{Num(6)}) (?<per>{Num(4)}) (?<pages>{Num(4)})" +
        $" : tunables (?<limit>{Num(4)}) (?<batch>{Num(4)}) (?<shared>{Num(4)})" +
        $" : slabdata (?<aslabs>{Num(6)}) (?<nslabs>{Num(6)}) (?<avail>{Num(6)})$",
        RegexOptions.CultureInvariant);

    private sealed record Parsed(string Name, long Active, long Num, int Size, int PerSlab, int Pages, long ActiveSlabs, long Slabs);

    private static Parsed Parse(string line)
    {
        Match m = Line.Match(line);
        Assert.True(m.Success, $"not a slabinfo 2.1 line: '{line}'");
        string name = m.Groups["name"].Value;
        Assert.Equal(Math.Max(17, name.Length), name.Length + m.Groups["pad"].Value.Length); // %-17s
        long L(string g) => long.Parse(m.Groups[g].Value.Trim(), CultureInfo.InvariantCulture);
        Assert.Equal(0, L("limit"));
        Assert.Equal(0, L("batch"));
        Assert.Equal(0, L("shared"));
        Assert.Equal(0, L("avail"));
        return new Parsed(name, L("active"), L("num"), (int)L("size"), (int)L("per"), (int)L("pages"), L("aslabs"), L("nslabs"));
    }

    private static void AssertAgreesWithStats(KmemCache cache, Parsed line)
    {
        KmemCacheStats s = cache.Stats;
        Assert.Equal(cache.Name, line.Name);
        Assert.Equal(s.ActiveObjects, line.Active);
        Assert.Equal(s.TotalObjects, line.Num);
        Assert.Equal(cache.SlotSize, line.Size);
        Assert.Equal(cache.ObjectsPerSlab, line.PerSlab);
        Assert.Equal(1 << cache.Order, line.Pages);
        Assert.Equal(s.Slabs, line.Slabs);
        Assert.Equal(s.Slabs, line.ActiveSlabs);
        Assert.Equal(s.Slabs * cache.ObjectsPerSlab, s.TotalObjects);
    }

    [Fact]
    public void RegexMatchesTheKernelsOwnExampleLine()
    {
        Parsed p = Parse("kmalloc-64          2618   2752     64   64    1 : tunables    0    0    0 : slabdata     43     43      0");
        Assert.Equal(new Parsed("kmalloc-64", 2618, 2752, 64, 64, 1, 43, 43), p);
        Assert.DoesNotMatch(Line, "kmalloc-64 2618 2752 64 64 1 : tunables 0 0 0 : slabdata 43 43 0");
    }

    [Fact]
    public void HeaderAndEveryCacheLineHaveTheExactFormat()
    {
        using var sys = NewSystem();
        sys.Slab.CreateCache("a-very-long-cache-name-beyond-17", 24);
        sys.Slab.CreateCache("dbg-333", 333, 0, SlabFlags.Debug);
        void* p = sys.Slab.Kmalloc(100);
        string text = sys.Slab.SlabInfo();
        output.WriteLine(text);
        Assert.EndsWith("\n", text);
        string[] lines = text[..^1].Split('\n');
        Assert.Equal(Header0, lines[0]);
        Assert.Equal(Header1, lines[1]);
        var caches = sys.Slab.Caches;
        Assert.Equal(caches.Count + 2, lines.Length);
        for (int i = 0; i < caches.Count; i++)
        {
            Assert.Equal(caches[i].SlabInfoLine(), lines[i + 2]);
            AssertAgreesWithStats(caches[i], Parse(lines[i + 2]));
        }
        Assert.Equal(sys.Slab.KmallocCaches.Select(k => k.Name), caches.Take(14).Select(c => c.Name));
        Assert.Equal(
            ["kmalloc-16", "kmalloc-32", "kmalloc-64", "kmalloc-96", "kmalloc-128", "kmalloc-192", "kmalloc-256",
             "kmalloc-512", "kmalloc-1k", "kmalloc-2k", "kmalloc-4k", "kmalloc-8k", "kmalloc-16k", "kmalloc-32k"],
            sys.Slab.KmallocCaches.Select(k => k.Name));
        sys.Slab.Kfree(p);
    }

    [Fact]
    public void ValuesAfterAKnownSequence()
    {
        using var sys = NewUncheckedSystem();
        KmemCache cache = sys.Slab.CreateCache("known-64", 64);
        Assert.Equal("known-64               0      0     64   64    1 : tunables    0    0    0 : slabdata      0      0      0", cache.SlabInfoLine());

        var objects = new nint[100];
        for (int i = 0; i < objects.Length; i++) objects[i] = (nint)cache.Alloc();
        Parsed line = Parse(cache.SlabInfoLine());
        AssertAgreesWithStats(cache, line);
        // Objects waiting in this thread's magazine count as active, like objects on a kernel cpu slab.
        Assert.InRange(line.Active, 100, line.Num);
        Assert.Equal(2, line.Slabs);

        cache.Shrink();
        Assert.Equal("known-64             100    128     64   64    1 : tunables    0    0    0 : slabdata      2      2      0", cache.SlabInfoLine());
        Assert.Contains(cache.SlabInfoLine() + "\n", sys.Slab.SlabInfo());

        foreach (nint p in objects) cache.Free((void*)p);
        AssertAgreesWithStats(cache, Parse(cache.SlabInfoLine()));
        cache.Shrink();
        Assert.Equal("known-64               0      0     64   64    1 : tunables    0    0    0 : slabdata      0      0      0", cache.SlabInfoLine());
    }

    [Fact]
    public void DebugCacheLineShowsTheSlotSize()
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("dbg-100", 100, 0, SlabFlags.Debug);
        void* p = cache.Alloc();
        Parsed line = Parse(cache.SlabInfoLine());
        AssertAgreesWithStats(cache, line);
        Assert.Equal(1, line.Active);
        Assert.Equal(cache.ObjectsPerSlab, line.Num);
        Assert.True(line.Size > 100, "objsize is the slot size, metadata included");
        Assert.Equal(PageSize() / cache.SlotSize, line.PerSlab);
        cache.Free(p);
        static int PageSize() => 4096;
    }

    [Theory]
    [InlineData(SlabFlags.None)]
    [InlineData(SlabFlags.Debug)]
    public void FastAndSlowPathCountersAddUpToTheCalls(SlabFlags flags)
    {
        using var sys = NewSystem();
        KmemCache cache = sys.Slab.CreateCache("count-64", 64, 0, flags);
        const int N = 1000;
        var objects = new nint[N];
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < N; i++) objects[i] = (nint)cache.Alloc();
            for (int i = 0; i < N; i++) cache.Free((void*)objects[i]);
        }
        KmemCacheStats s = cache.Stats;
        output.WriteLine(s.ToString());
        Assert.Equal(3 * N, s.AllocFastPath + s.AllocSlowPath);
        Assert.Equal(3 * N, s.FreeFastPath + s.FreeSlowPath);
        Assert.Equal(0, s.AllocFailures);
        Assert.Equal(s.SlabsAllocated - s.SlabsFreed, s.Slabs);
        cache.Shrink();
        s = cache.Stats;
        Assert.Equal(0, s.ActiveObjects);
        Assert.Equal(0, s.Slabs);
        Assert.Equal(s.SlabsAllocated, s.SlabsFreed);
    }
}
