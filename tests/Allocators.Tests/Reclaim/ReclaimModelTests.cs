using Allocators.Mmu;
using Allocators.Tests.Mmu;
using CsCheck;

namespace Allocators.Tests.Reclaim;

/// <summary>
/// Random sequences of private and shared anonymous mmap, munmap, mremap, fork, exit, reads, writes and proactive
/// reclaim (which swaps pages out through the anon_vma rmap and the shmem objects) over a few processes with a real
/// swap file, checked against a dictionary model of what each page holds; at the end every page, slot and swap-cache
/// page is given back.
/// </summary>
public class ReclaimModelTests
{
    private const ulong Base = 0x20_0000_0000UL;
    private const int Window = 64;

    public enum Kind { Mmap, MmapShared, Munmap, Write, Read, Fork, Exit, Mremap, Reclaim }

    public readonly record struct Op(Kind Kind, int Proc, int Page, int Count, long Value)
    {
        public override string ToString() => $"{Kind}(p{Proc}, page {Page}, n {Count}, v {Value})";
    }

    private static readonly Gen<Op> GenOp =
        Gen.Select(
            Gen.Frequency((3, Gen.Const(Kind.Mmap)), (2, Gen.Const(Kind.MmapShared)), (1, Gen.Const(Kind.Munmap)),
                (6, Gen.Const(Kind.Write)), (4, Gen.Const(Kind.Read)), (2, Gen.Const(Kind.Fork)), (1, Gen.Const(Kind.Exit)),
                (1, Gen.Const(Kind.Mremap)), (3, Gen.Const(Kind.Reclaim))),
            Gen.Int[0, 2], Gen.Int[0, Window - 1], Gen.Int[1, 16], Gen.Long[1, 1_000_000])
        .Select((k, p, page, n, v) => new Op(k, p, page, n, v));

    [Fact]
    public void RandomSequencesUnderReclaimMatchTheModel()
    {
        s_swappedOut = s_swappedIn = 0;
        GenOp.Array[10, 60].Sample(Run, iter: 40, threads: 1);
        Assert.True(s_swappedOut > 0 && s_swappedIn > 0, $"{s_swappedOut} pages swapped out, {s_swappedIn} in");
    }

    private static long s_swappedOut;
    private static long s_swappedIn;

    private static void Run(Op[] ops)
    {
        using var f = new SwapFixture(arenaBytes: 16L << 20, swapBytes: 16L << 20);
        var world = new ProcessModel(Base, f.NewProcess());
        List<AddressSpace> procs = world.Processes;
        List<Dictionary<int, PageModel>> models = world.Models;
        try
        {
            foreach (var op in ops)
            {
                int pi = op.Proc % procs.Count;
                AddressSpace mm = procs[pi];
                Dictionary<int, PageModel> model = models[pi];
                int end = Math.Min(Window, op.Page + op.Count);
                ulong Va(int page) => world.Va(page);
                switch (op.Kind)
                {
                    case Kind.Mmap:
                    case Kind.MmapShared:
                        world.Mmap(pi, op.Page, end, MemoryProtection.ReadWrite, op.Kind == Kind.MmapShared);
                        break;
                    case Kind.Munmap:
                        world.Munmap(pi, op.Page, end);
                        break;
                    case Kind.Write:
                        if (model.TryGetValue(op.Page, out PageModel? w))
                        {
                            mm.Write<long>(Va(op.Page) + 64, op.Value);
                            w.Cell.Value = op.Value;
                        }
                        break;
                    case Kind.Read:
                        world.CheckPage(pi, op.Page);
                        break;
                    case Kind.Fork:
                        world.Fork(pi);
                        break;
                    case Kind.Exit:
                        world.Exit(pi);
                        break;
                    case Kind.Mremap:
                        world.MremapPage(pi, op.Page, (op.Page + op.Count * 5) % Window);
                        break;
                    case Kind.Reclaim:
                        f.System.Reclaim(op.Count * 8);
                        break;
                }
            }
            world.CheckAll(Window);
            f.AnonSwapChecks();
        }
        finally
        {
            world.DisposeAll();
            s_swappedOut += f.Counters.PagesSwappedOut;
            s_swappedIn += f.Counters.PagesSwappedIn;
        }
        f.AssertAllBack();
    }
}
