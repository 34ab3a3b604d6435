using System.Text.RegularExpressions;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>/proc/buddyinfo, /proc/zoneinfo, /proc/vmstat and numastat in the kernel's own layouts.</summary>
public sealed unsafe partial class TextFormatTests
{
    // "Node %d, zone %8s " then "%6lu " for each order 0..10, then a newline.
    [GeneratedRegex(@"^Node (\d+), zone ([ A-Za-z0-9]{8}) ((?:[ 0-9]{5}[0-9] ){11})$")]
    private static partial Regex BuddyInfoLine();

    [GeneratedRegex(@"^[a-z0-9_]+ -?\d+$")]
    private static partial Regex VmStatLine();

    /// <summary>Parses buddyinfo, checking every line's layout, into (node, zone name, counts per order).</summary>
    private static List<(int Node, string Zone, long[] Counts)> ParseBuddyInfo(string text)
    {
        Assert.EndsWith("\n", text);
        var result = new List<(int, string, long[])>();
        foreach (string line in text[..^1].Split('\n'))
        {
            Match m = BuddyInfoLine().Match(line);
            Assert.True(m.Success, $"not in buddyinfo format: '{line}'");
            string counts = m.Groups[3].Value;
            long[] values = Enumerable.Range(0, 11).Select(o => long.Parse(counts.Substring(o * 7, 6))).ToArray();
            result.Add((int.Parse(m.Groups[1].Value), m.Groups[2].Value.Trim(), values));
        }
        return result;
    }

    private static string Line(int node, string zone, params long[] counts)
        => $"Node {node}, zone {zone,8} " + string.Concat(counts.Select(c => $"{c,6} ")) + "\n";

    [Fact]
    public void FreshSixteenMiBArenaPrintsOneNormalLine()
    {
        using var sys = NewSystem(16);
        Assert.Equal("Node 0, zone   Normal      0      0      0      0      0      0      0      0      0      0      4 \n",
            sys.Pages.BuddyInfo());
    }

    [Fact]
    public void FreshSixtyFourMiBArenaPrintsDmaDma32AndNormal()
    {
        using var sys = NewSystem(64);
        Assert.Equal(
            "Node 0, zone      DMA      0      0      0      0      0      0      0      0      0      0      1 \n" +
            "Node 0, zone    DMA32      0      0      0      0      0      0      0      0      0      0      4 \n" +
            "Node 0, zone   Normal      0      0      0      0      0      0      0      0      0      0     11 \n",
            sys.Pages.BuddyInfo());
    }

    [Fact]
    public void BuddyInfoTracksSplitsAndMergesExactly()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        // An order-7 allocation splits one order-10 block into 7 + 7 + 8 + 9.
        PageFrame* a = pa.AllocPages(Gfp.Kernel, 7);
        Assert.Equal(Line(0, "Normal", 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 3), pa.BuddyInfo());
        PageFrame* b = pa.AllocPages(Gfp.Kernel, 4);
        Assert.Equal(Line(0, "Normal", 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 3), pa.BuddyInfo());
        pa.FreePages(a, 7);
        pa.FreePages(b, 4);
        Assert.Equal(Line(0, "Normal", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4), pa.BuddyInfo());

        var random = new Random(5);
        var live = new List<(nint, int)>();
        for (int i = 0; i < 300; i++)
        {
            int order = random.Next(0, 9);
            live.Add(((nint)pa.AllocPages(Gfp.Kernel | Gfp.NoWarn, order), order));
            live.RemoveAll(x => x.Item1 == 0);
            if (live.Count > 20)
            {
                var (p, o) = live[random.Next(live.Count)];
                live.Remove((p, o));
                pa.FreePages((PageFrame*)p, o);
            }
        }
        pa.DrainAllPages();
        var parsed = Assert.Single(ParseBuddyInfo(pa.BuddyInfo()));
        Zone normal = pa.GetZone(0, ZoneType.Normal);
        Assert.Equal(Enumerable.Range(0, 11).Select(o => normal.FreeBlocks(o)), parsed.Counts);
        Assert.Equal(normal.FreePages, parsed.Counts.Select((c, o) => c << o).Sum());
        foreach (var (p, o) in live) pa.FreePages((PageFrame*)p, o);
    }

    [Fact]
    public void CountsAreRightAlignedInSixCharacterColumns()
    {
        using var sys = NewSystem(16);
        PageAllocator pa = sys.Pages;
        // Free every other page: 2047 order-0 blocks cannot merge.
        var pages = new List<nint>();
        PageFrame* p;
        while ((p = pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn, 0)) != null) pages.Add((nint)p);
        foreach (nint q in pages.Where(q => ((PageFrame*)q)->Pfn % 2 == 1)) pa.FreePages((PageFrame*)q, 0);
        pa.DrainAllPages();
        Assert.Equal(Line(0, "Normal", 2048, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), pa.BuddyInfo());
        Assert.Equal("Node 0, zone   Normal   2048      0      0      0      0      0      0      0      0      0      0 \n", pa.BuddyInfo());
        foreach (nint q in pages.Where(q => ((PageFrame*)q)->Pfn % 2 == 0)) pa.FreePages((PageFrame*)q, 0);
    }

    [Fact]
    public void UnpopulatedZonesAreAbsentAndComeBackWithMemory()
    {
        // Sparse, two nodes, one 8 MiB section each.
        using var sys = NewSparseSystem(16, 8, 16, nodes: 2);
        PageAllocator pa = sys.Pages;
        Assert.Equal(Line(0, "Normal", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2) + Line(1, "Normal", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2),
            pa.BuddyInfo());
        pa.RemoveMemory(1);
        Assert.Equal(Line(0, "Normal", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2), pa.BuddyInfo());
        Assert.False(pa.GetZone(1, ZoneType.Normal).Populated);
        Assert.Equal(1, pa.AddMemory());   // goes to the node with the least memory: node 1
        Assert.Equal(Line(0, "Normal", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2) + Line(1, "Normal", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2),
            pa.BuddyInfo());
    }

    [Fact]
    public void ZoneInfoShowsTheKernelItemsWithTheZoneValues()
    {
        using var sys = NewSystem(64);
        PageAllocator pa = sys.Pages;
        PageFrame* page = pa.AllocPages(Gfp.Kernel, 2);
        string text = pa.ZoneInfo();
        foreach (Zone z in pa.Zones.Where(z => z.Populated))
        {
            string header = $"Node {z.Node}, zone {z.Name,8}\n";
            int at = text.IndexOf(header, StringComparison.Ordinal);
            Assert.True(at >= 0, $"missing '{header}'");
            int next = text.IndexOf("Node ", at + header.Length, StringComparison.Ordinal);
            string block = next < 0 ? text[at..] : text[at..next];
            Assert.Contains($"\n  pages free     {z.FreePages}\n", block);
            Assert.Contains($"\n        min      {z.WatermarkMin}\n", block);
            Assert.Contains($"\n        low      {z.WatermarkLow}\n", block);
            Assert.Contains($"\n        high     {z.WatermarkHigh}\n", block);
            Assert.Contains($"\n        spanned  {z.SpannedPages}\n", block);
            Assert.Contains($"\n        present  {z.PresentPages}\n", block);
            Assert.Contains($"\n        managed  {z.ManagedPages}\n", block);
            Assert.Contains($"\n  start_pfn:           {z.StartPfn}\n", block);
        }
        Assert.Contains("Node 0, zone      DMA\n  pages free     1024\n        boost    0\n        min      16\n        low      20\n        high     24\n        spanned  1024\n        present  1024\n        managed  1024\n", text);
        pa.FreePages(page, 2);
    }

    [Fact]
    public void VmStatIsNameValueLinesWithExactCounters()
    {
        using var sys = NewSystem(64);
        PageAllocator pa = sys.Pages;
        var before = pa.VmStatItems().ToDictionary(i => i.Name, i => i.Value);
        PageFrame* normal = pa.AllocPages(Gfp.Kernel, 3);
        PageFrame* dma = pa.AllocPages(Gfp.KernelDma, 0);
        PageFrame* dma32 = pa.AllocPages(Gfp.KernelDma32, 1);
        pa.FreePages(normal, 3);

        string text = pa.VmStat();
        Assert.EndsWith("\n", text);
        var lines = text[..^1].Split('\n');
        Assert.All(lines, l => Assert.Matches(VmStatLine(), l));
        var after = lines.Select(l => l.Split(' ')).ToDictionary(p => p[0], p => long.Parse(p[1]));
        Assert.Equal(before["pgalloc_normal"] + 8, after["pgalloc_normal"]);
        Assert.Equal(before["pgalloc_dma"] + 1, after["pgalloc_dma"]);
        Assert.Equal(before["pgalloc_dma32"] + 2, after["pgalloc_dma32"]);
        Assert.Equal(before["pgfree"] + 8, after["pgfree"]);
        Assert.Equal(before["numa_hit"] + 3, after["numa_hit"]);
        Assert.Equal(pa.NrFreePages, after["nr_free_pages"]);
        Assert.Equal(pa.PcpPages, after["nr_free_pcp"]);
        Assert.Equal(pa.ManagedPages - 8 - 1 - 2 + 8, after["nr_free_pages"] + after["nr_free_pcp"]);
        foreach (string name in new[] { "pgalloc_fail", "pgalloc_fail_injected", "numa_miss", "numa_foreign", "numa_local", "numa_other" })
            Assert.True(after.ContainsKey(name), name);
        pa.FreePages(dma, 0);
        pa.FreePages(dma32, 1);
    }
}
