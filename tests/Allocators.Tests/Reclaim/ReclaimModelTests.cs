using Allocators.Mmu;
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

    private sealed class Cell { public long Value; }

    private sealed record PageModel(Cell Cell, bool Shared);

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
        var procs = new List<AddressSpace> { f.NewProcess() };
        var models = new List<Dictionary<int, PageModel>> { new() };
        try
        {
            foreach (var op in ops)
            {
                int pi = op.Proc % procs.Count;
                AddressSpace mm = procs[pi];
                Dictionary<int, PageModel> model = models[pi];
                int end = Math.Min(Window, op.Page + op.Count);
                static ulong Va(int page) => Base + (ulong)page * 4096;
                switch (op.Kind)
                {
                    case Kind.Mmap:
                    case Kind.MmapShared:
                    {
                        bool shared = op.Kind == Kind.MmapShared;
                        mm.Mmap(Va(op.Page), (ulong)(end - op.Page) * 4096, MemoryProtection.ReadWrite,
                            (shared ? MapFlags.Shared : MapFlags.Private) | MapFlags.Anonymous | MapFlags.Fixed);
                        for (int p = op.Page; p < end; p++) model[p] = new PageModel(new Cell(), shared);
                        break;
                    }
                    case Kind.Munmap:
                        mm.Munmap(Va(op.Page), (ulong)(end - op.Page) * 4096);
                        for (int p = op.Page; p < end; p++) model.Remove(p);
                        break;
                    case Kind.Write:
                        if (model.TryGetValue(op.Page, out PageModel? w))
                        {
                            mm.Write<long>(Va(op.Page) + 64, op.Value);
                            w.Cell.Value = op.Value;
                        }
                        break;
                    case Kind.Read:
                        CheckPage(mm, model, op.Page);
                        break;
                    case Kind.Fork:
                        if (procs.Count < 3)
                        {
                            procs.Add(mm.Fork());
                            models.Add(model.ToDictionary(kv => kv.Key,
                                kv => kv.Value.Shared ? kv.Value : kv.Value with { Cell = new Cell { Value = kv.Value.Cell.Value } }));
                        }
                        break;
                    case Kind.Exit:
                        if (procs.Count > 1)
                        {
                            mm.Dispose();
                            procs.RemoveAt(pi);
                            models.RemoveAt(pi);
                        }
                        break;
                    case Kind.Mremap:
                    {
                        int target = (op.Page + op.Count * 5) % Window;
                        if (target != op.Page && model.ContainsKey(op.Page))
                        {
                            mm.Mremap(Va(op.Page), 4096, 4096, MremapFlags.MayMove | MremapFlags.Fixed, Va(target));
                            model[target] = model[op.Page];
                            model.Remove(op.Page);
                        }
                        break;
                    }
                    case Kind.Reclaim:
                        f.System.Reclaim(op.Count * 8);
                        break;
                }
            }
            for (int i = 0; i < procs.Count; i++)
            {
                procs[i].CheckConsistency();
                for (int p = 0; p < Window; p++) CheckPage(procs[i], models[i], p);
            }
            f.AnonSwapChecks();
        }
        finally
        {
            foreach (AddressSpace p in procs) p.Dispose();
            s_swappedOut += f.Counters.PagesSwappedOut;
            s_swappedIn += f.Counters.PagesSwappedIn;
        }
        f.AssertAllBack();
    }

    private static void CheckPage(AddressSpace mm, Dictionary<int, PageModel> model, int page)
    {
        ulong va = Base + (ulong)page * 4096 + 64;
        if (model.TryGetValue(page, out PageModel? m)) Assert.Equal(m.Cell.Value, mm.Read<long>(va));
        else Assert.Equal(SegvCode.MapError, Assert.Throws<SegmentationFaultException>(() => mm.Read<long>(va)).Code);
    }
}
