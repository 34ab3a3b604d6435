using Allocators.Mmu;
using CsCheck;

namespace Allocators.Tests.Mmu;

/// <summary>
/// Random sequences of mmap/munmap/mprotect/fork/exit/read/write over a few processes, checked against a plain
/// dictionary model of which pages are mapped, with what protection, and what value they hold.
/// </summary>
public class ModelBasedTests
{
    private const ulong Base = 0x10_0000_0000UL;
    private const int WindowPages = 10;
    private const int HugeWindowPages = 1024; // two 2 MiB huge pages

    public enum Kind { Mmap, MmapShared, Munmap, Mprotect, Write, Read, Fork, Exit, Mremap }

    public readonly record struct Op(Kind Kind, int Proc, int Page, int Count, int Prot, long Value)
    {
        public override string ToString() => $"{Kind}(p{Proc}, page {Page}, n {Count}, prot {Prot}, v {Value})";
    }

    private static readonly MemoryProtection[] Prots = [MemoryProtection.None, MemoryProtection.Read, MemoryProtection.ReadWrite];

    private static readonly Gen<Op> GenOp = OpGen(WindowPages, 4);

    private static Gen<Op> OpGen(int window, int maxCount) => OpGen(Gen.Int[0, window - 1], Gen.Int[1, maxCount]);

    // Huge mode: whole 2 MiB blocks half of the time, so that mappings become huge and later get split.
    private static Gen<Op> HugeOpGen() => OpGen(
        Gen.Frequency((1, Gen.Const(0)), (1, Gen.Const(512)), (2, Gen.Int[0, HugeWindowPages - 1])),
        Gen.Frequency((1, Gen.Const(512)), (1, Gen.Const(1024)), (2, Gen.Int[1, 64])));

    private static Gen<Op> OpGen(Gen<int> page, Gen<int> count) =>
        Gen.Select(
                Gen.Frequency((3, Gen.Const(Kind.Mmap)), (1, Gen.Const(Kind.MmapShared)), (1, Gen.Const(Kind.Munmap)),
                    (2, Gen.Const(Kind.Mprotect)), (6, Gen.Const(Kind.Write)), (4, Gen.Const(Kind.Read)),
                    (2, Gen.Const(Kind.Fork)), (1, Gen.Const(Kind.Exit)), (1, Gen.Const(Kind.Mremap))),
                Gen.Int[0, 2], page, count, Gen.Int[0, 2], Gen.Long[1, 1_000_000])
           .Select((k, p, page, n, prot, v) => new Op(k, p, page, n, prot, v));

    [Fact]
    public void RandomSequencesMatchTheModel()
    {
        GenOp.Array[10, 100].Sample(ops => Run(ops, WindowPages, huge: false), iter: 150, threads: 2);
    }

    /// <summary>The same over two 2 MiB huge pages, so partial munmap/mprotect/mremap and fork split them.</summary>
    [Fact]
    public void RandomSequencesOverHugePagesMatchTheModel()
    {
        s_thpAllocs = s_thpSplits = 0;
        HugeOpGen().Array[10, 40].Sample(ops => Run(ops, HugeWindowPages, huge: true), iter: 60, threads: 2);
        Assert.True(Interlocked.Read(ref s_thpAllocs) > 0, "no huge page was ever mapped");
        Assert.True(Interlocked.Read(ref s_thpSplits) > 0, $"no huge page was ever split ({s_thpAllocs} huge faults)");
    }

    private static long s_thpAllocs;
    private static long s_thpSplits;

    private static void Run(Op[] ops, int window, bool huge)
    {
        using var f = new MmuFixture(huge ? 64L << 20 : 32L << 20);
        var world = new ProcessModel(Base, f.NewProcess("p0"));
        List<AddressSpace> procs = world.Processes;
        List<Dictionary<int, PageModel>> models = world.Models;
        try
        {
            foreach (var op in ops)
            {
                int pi = op.Proc % procs.Count;
                var mm = procs[pi];
                var model = models[pi];
                int end = Math.Min(window, op.Page + op.Count);
                ulong Va(int page) => world.Va(page);
                switch (op.Kind)
                {
                    case Kind.Mmap:
                    case Kind.MmapShared:
                        world.Mmap(pi, op.Page, end, Prots[op.Prot], op.Kind == Kind.MmapShared, huge ? MapFlags.HugePage : 0);
                        break;
                    case Kind.Munmap:
                        world.Munmap(pi, op.Page, end);
                        break;
                    case Kind.Mprotect:
                    {
                        var prot = Prots[op.Prot];
                        bool allMapped = Enumerable.Range(op.Page, end - op.Page).All(model.ContainsKey);
                        if (allMapped)
                        {
                            mm.Mprotect(Va(op.Page), (ulong)(end - op.Page) * 4096, prot);
                            for (int p = op.Page; p < end; p++) model[p] = model[p] with { Prot = prot };
                        }
                        else
                        {
                            Assert.Throws<InvalidOperationException>(() => mm.Mprotect(Va(op.Page), (ulong)(end - op.Page) * 4096, prot));
                        }
                        break;
                    }
                    case Kind.Write:
                        if (model.TryGetValue(op.Page, out var w) && (w.Prot & MemoryProtection.Write) != 0)
                        {
                            mm.Write<long>(Va(op.Page) + 64, op.Value);
                            w.Cell.Value = op.Value;
                        }
                        else
                        {
                            var ex = Assert.Throws<SegmentationFaultException>(() => mm.Write<long>(Va(op.Page) + 64, op.Value));
                            Assert.Equal(model.ContainsKey(op.Page) ? SegvCode.AccessError : SegvCode.MapError, ex.Code);
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
                        // Move one whole mapped page to another page of the window.
                        world.MremapPage(pi, op.Page, (op.Page + op.Count * 5) % window);
                        break;
                }
            }
            world.CheckAll(window, huge ? 7 : 1);
        }
        finally
        {
            world.DisposeAll();
            Interlocked.Add(ref s_thpAllocs, f.Kernel.Statistics.ThpFaultAllocations);
            Interlocked.Add(ref s_thpSplits, f.Kernel.Statistics.ThpSplits);
        }
        f.AssertAllFreed();
    }
}
