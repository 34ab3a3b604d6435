using System.Text.RegularExpressions;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>Two emulated nodes: node-local allocation, __GFP_THISNODE, fallback and the numastat counters.</summary>
public sealed unsafe partial class NumaTests
{
    private static readonly int[] AllCpusOnNode0 = Enumerable.Repeat(0, 1024).ToArray();
    private static readonly int[] AllCpusOnNode1 = Enumerable.Repeat(1, 1024).ToArray();

    // 32 MiB over two nodes: node 0 = pfn 0..4095 (Normal only), node 1 = pfn 4096..8191.
    private static MemorySystem TwoNodes(int[] cpuToNode) => NewSystem(32, nodes: 2, cpuToNode: cpuToNode);

    [GeneratedRegex(@"^numa_hit (\d+)\nnuma_miss (\d+)\nnuma_foreign (\d+)\ninterleave_hit (\d+)\nlocal_node (\d+)\nother_node (\d+)\n$")]
    private static partial Regex NumaStatFormat();

    private readonly record struct NumaStat(long Hit, long Miss, long Foreign, long Local, long Other);

    private static NumaStat Stat(PageAllocator pa, int node)
    {
        Match m = NumaStatFormat().Match(pa.NumaStat(node));
        Assert.True(m.Success, pa.NumaStat(node));
        Assert.Equal("0", m.Groups[4].Value);
        return new NumaStat(long.Parse(m.Groups[1].Value), long.Parse(m.Groups[2].Value), long.Parse(m.Groups[3].Value),
            long.Parse(m.Groups[5].Value), long.Parse(m.Groups[6].Value));
    }

    [Fact]
    public void LayoutPutsEachNodesMemoryInItsOwnZone()
    {
        using var sys = TwoNodes(AllCpusOnNode0);
        PageAllocator pa = sys.Pages;
        Assert.Equal(2, pa.NodeCount);
        Zone n0 = pa.GetZone(0, ZoneType.Normal), n1 = pa.GetZone(1, ZoneType.Normal);
        Assert.Equal((0L, 4096L), (n0.StartPfn, n0.PresentPages));
        Assert.Equal((4096L, 4096L), (n1.StartPfn, n1.PresentPages));
        Assert.Equal(2, pa.Zones.Count(z => z.Populated));
        Assert.Equal([n1, n0], pa.Zonelist(1, ZoneType.Normal));
        Assert.Equal([n0, n1], pa.Zonelist(0, ZoneType.Normal));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void CpuToNodeDecidesWhereAPlainAllocationGoes(int home)
    {
        using var sys = TwoNodes(home == 0 ? AllCpusOnNode0 : AllCpusOnNode1);
        PageAllocator pa = sys.Pages;
        Assert.Equal(home, pa.CurrentNode);
        Assert.Equal(home, pa.CpuToNode(0));
        Zone local = pa.GetZone(home, ZoneType.Normal);
        var pages = new List<nint>();
        for (int i = 0; i < 100; i++)
        {
            PageFrame* p = pa.AllocPages(Gfp.Kernel, i % 4);
            Assert.Equal(local.Id, p->ZoneId);
            pages.Add((nint)p);
        }
        NumaStat s = Stat(pa, home);
        Assert.Equal(100, s.Hit);
        Assert.Equal(100, s.Local);
        Assert.Equal((0L, 0L, 0L), (s.Miss, s.Foreign, s.Other));
        Assert.Equal(default, Stat(pa, 1 - home));
        for (int i = 0; i < pages.Count; i++) pa.FreePages((PageFrame*)pages[i], i % 4);
    }

    [Fact]
    public void AllocPagesNodeTakesPagesFromThatNode()
    {
        using var sys = TwoNodes(AllCpusOnNode0);
        PageAllocator pa = sys.Pages;
        Zone n1 = pa.GetZone(1, ZoneType.Normal);
        var pages = new List<(nint, int)>();
        foreach (int order in new[] { 0, 0, 1, 3, 5, 10 })
        {
            PageFrame* p = pa.AllocPagesNode(1, Gfp.Kernel, order);
            Assert.Equal(n1.Id, p->ZoneId);
            Assert.InRange(p->Pfn, 4096UL, 8191UL);
            pages.Add(((nint)p, order));
        }
        PageFrame* own = pa.AllocPagesNode(0, Gfp.Kernel, 0);
        Assert.Equal(pa.GetZone(0, ZoneType.Normal).Id, own->ZoneId);

        NumaStat s1 = Stat(pa, 1);
        Assert.Equal(6, s1.Hit);
        Assert.Equal(6, s1.Other);       // allocated by a CPU of node 0
        Assert.Equal(0, s1.Local);
        Assert.Equal(new NumaStat(1, 0, 0, 1, 0), Stat(pa, 0));

        Assert.Throws<ArgumentOutOfRangeException>(() => pa.AllocPagesNode(2, Gfp.Kernel, 0));
        foreach (var (p, order) in pages) pa.FreePages((PageFrame*)p, order);
        pa.FreePages(own, 0);
    }

    [Fact]
    public void ThisNodeFailsWhenTheNodeIsExhaustedAndPlainFallsBackCountingMissAndForeign()
    {
        using var sys = TwoNodes(AllCpusOnNode0);
        PageAllocator pa = sys.Pages;
        Zone n0 = pa.GetZone(0, ZoneType.Normal), n1 = pa.GetZone(1, ZoneType.Normal);

        var node1 = new List<nint>();
        PageFrame* p;
        while ((p = pa.AllocPagesNode(1, Gfp.Kernel | Gfp.ThisNode | Gfp.NoWarn, 0)) != null)
        {
            Assert.Equal(n1.Id, p->ZoneId);
            node1.Add((nint)p);
        }
        Assert.Equal(n1.ManagedPages - n1.WatermarkMin, node1.Count);
        Assert.Equal(n1.WatermarkMin, n1.FreePages);
        Assert.Equal(n0.ManagedPages, n0.FreePages);   // node 0 untouched
        long failures = pa.AllocFailures;
        Assert.True(pa.AllocPagesNode(1, Gfp.Kernel | Gfp.ThisNode | Gfp.NoWarn, 0) == null);
        Assert.Equal(failures + 1, pa.AllocFailures);

        NumaStat s0 = Stat(pa, 0), s1 = Stat(pa, 1);
        Assert.Equal(node1.Count, s1.Hit);
        Assert.Equal((0L, 0L), (s0.Miss, s1.Foreign));

        // Without __GFP_THISNODE the same request falls back to node 0.
        PageFrame* fallback = pa.AllocPagesNode(1, Gfp.Kernel | Gfp.NoWarn, 0);
        Assert.True(fallback != null);
        Assert.Equal(n0.Id, fallback->ZoneId);
        NumaStat t0 = Stat(pa, 0), t1 = Stat(pa, 1);
        Assert.Equal(s0.Miss + 1, t0.Miss);          // node 0 served a page meant for node 1
        Assert.Equal(s1.Foreign + 1, t1.Foreign);    // node 1 wanted it
        Assert.Equal(s0.Hit, t0.Hit);
        Assert.Equal(s1.Hit, t1.Hit);
        Assert.Equal(s0.Local + 1, t0.Local);        // the CPU is on node 0
        Assert.Contains(pa.VmStatItems(), i => i == ("numa_miss", 1L));
        Assert.Contains(pa.VmStatItems(), i => i == ("numa_foreign", 1L));
        Assert.Contains("numa_miss 1", pa.ZoneInfo());

        // __GFP_THISNODE with the reserve flag may still use node 1's reserve.
        PageFrame* reserve = pa.AllocPagesNode(1, Gfp.Kernel | Gfp.ThisNode | Gfp.MemAlloc | Gfp.NoWarn, 0);
        Assert.True(reserve != null);
        Assert.Equal(n1.Id, reserve->ZoneId);

        pa.FreePages(reserve, 0);
        pa.FreePages(fallback, 0);
        foreach (nint q in node1) pa.FreePages((PageFrame*)q, 0);
        pa.DrainAllPages();
        Assert.Equal(pa.ManagedPages, pa.NrFreePages);
    }

    [Fact]
    public void InvalidCpuToNodeIsRejected()
    {
        Assert.Throws<ArgumentException>(() => TwoNodes([0, 1, 2]));
    }

    [Fact]
    public void LocalAndOtherFollowTheZoneThatServedThePage()
    {
        // Only node 0 has a DMA zone, so GFP_DMA for node 1 is served by node 0: for a CPU of node 0 that is local,
        // on the per-thread fast path as well as on the slow path.
        using var sys = NewSystem(32, nodes: 2, dmaMiB: 4, dma32MiB: 4, cpuToNode: AllCpusOnNode0);
        PageAllocator pa = sys.Pages;
        Zone dma = pa.GetZone(0, ZoneType.Dma);
        var pages = new List<nint>();
        for (int i = 0; i < 40; i++)
        {
            PageFrame* p = pa.AllocPagesNode(1, Gfp.KernelDma, 0);
            Assert.Equal(dma.Id, p->ZoneId);
            pages.Add((nint)p);
            if (i % 8 == 7)
            {
                // Put a few back so that the next ones come from this thread's list (the fast path).
                for (int k = 0; k < 4; k++)
                {
                    pa.FreePages((PageFrame*)pages[^1], 0);
                    pages.RemoveAt(pages.Count - 1);
                }
            }
        }
        NumaStat s0 = Stat(pa, 0);
        Assert.Equal(40, s0.Hit);        // the zonelist of node 1 for DMA starts at node 0's DMA zone
        Assert.Equal(40, s0.Local);
        Assert.Equal(0, s0.Other);
        Assert.Equal(default, Stat(pa, 1));
        foreach (nint q in pages) pa.FreePages((PageFrame*)q, 0);
    }
}
