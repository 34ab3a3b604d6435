using Allocators.Common;
using Allocators.Swap;
using CsCheck;
using Xunit.Abstractions;

namespace Allocators.Tests.Swap;

/// <summary>Random alloc/dup/free/cache sequences against a dictionary of slot -> (count, cached).</summary>
public sealed class SwapModelTests(ITestOutputHelper output) : SwapTestBase
{
    public enum Kind { Alloc, Dup, Free, Prepare, PutCache }

    public readonly record struct Op(Kind Kind, int Pick)
    {
        public override string ToString() => $"{Kind}({Pick})";
    }

    private static readonly Gen<Op[]> GenOps = Gen.Select(
        Gen.Frequency((4, Gen.Const(Kind.Alloc)), (3, Gen.Const(Kind.Dup)), (3, Gen.Const(Kind.Free)), (2, Gen.Const(Kind.Prepare)), (2, Gen.Const(Kind.PutCache))),
        Gen.Int[0, 1 << 20], (kind, pick) => new Op(kind, pick)).Array[1, 300];

    [Fact]
    public void RandomOperationsMatchTheModel()
    {
        // 2 clusters and a bit: small enough that the device fills up and clusters move between the lists.
        string path = Mkswap("swap", 2 * 256 + 40);
        GenOps.Sample(ops =>
        {
            using var table = new SwapTable();
            SwapDevice device = table.Swapon(path);
            var model = new Dictionary<ulong, (int Count, bool Cached)>();
            foreach (Op op in ops) Apply(device, model, op);
            device.CheckConsistency();
            Assert.Equal(model.Count, device.UsedPages);
            for (uint s = 1; s < device.MaxPages; s++)
            {
                var e = new SwapEntry(device.Type, s);
                (int count, bool cached) = model.TryGetValue(s, out var m) ? m : (0, false);
                Assert.Equal(count, device.SwapCount(e));
                Assert.Equal(cached, device.HasCache(e));
            }
        }, iter: 60, threads: 1, print: ops => string.Join(", ", ops), writeLine: output.WriteLine);
    }

    private static void Apply(SwapDevice device, Dictionary<ulong, (int Count, bool Cached)> model, Op op)
    {
        if (op.Kind == Kind.Alloc)
        {
            SwapEntry e = device.GetSwapPage();
            if (model.Count == device.Pages) { Assert.True(e.IsNone); return; }
            Assert.False(e.IsNone);
            Assert.True(model.TryAdd(e.Offset, (0, true)), $"slot {e.Offset} handed out twice");
            return;
        }
        // Pick a used slot most of the time, a free one otherwise (misuse must throw and change nothing).
        ulong slot = model.Count > 0 && op.Pick % 8 != 0
            ? model.Keys.ElementAt(op.Pick % model.Count)
            : 1 + (ulong)op.Pick % (ulong)device.Pages;
        var entry = new SwapEntry(device.Type, slot);
        bool used = model.TryGetValue(slot, out var state);
        switch (op.Kind)
        {
            case Kind.Dup when used:
                device.Duplicate(entry);
                model[slot] = state with { Count = state.Count + 1 };
                break;
            case Kind.Dup:
                Assert.Throws<MemoryCorruptionException>(() => device.Duplicate(entry));
                break;
            case Kind.Free when state.Count > 0:
                Assert.Equal(state.Count - 1, device.SwapFree(entry));
                Update(model, slot, state with { Count = state.Count - 1 });
                break;
            case Kind.Free:
                Assert.Throws<MemoryCorruptionException>(() => device.SwapFree(entry));
                break;
            case Kind.Prepare when used:
                Assert.Equal(!state.Cached, device.SwapcachePrepare(entry));
                model[slot] = state with { Cached = true };
                break;
            case Kind.Prepare:
                Assert.False(device.SwapcachePrepare(entry)); // -ENOENT: a free slot stays free
                break;
            case Kind.PutCache when state.Cached:
                device.PutSwapCache(entry);
                Update(model, slot, state with { Cached = false });
                break;
            case Kind.PutCache:
                Assert.Throws<MemoryCorruptionException>(() => device.PutSwapCache(entry));
                break;
        }
    }

    private static void Update(Dictionary<ulong, (int Count, bool Cached)> model, ulong slot, (int Count, bool Cached) state)
    {
        if (state is (0, false)) model.Remove(slot);
        else model[slot] = state;
    }
}
