using System.Numerics;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;
using CsCheck;
using Xunit.Abstractions;
using static Allocators.Tests.Slab.SlabTestSupport;

namespace Allocators.Tests.Slab;

/// <summary>
/// Model-based tests: random sequences of cache allocations, kmalloc/kzalloc/kcalloc/kmalloc_node, krealloc, frees and
/// shrinks are run against the slab layer and a simple model (the live objects and their contents). After every step
/// the new object is checked for alignment, ownership, usable size and overlap with every other live object; contents
/// are verified at every free and reallocation; at the end everything goes back and the buddy lists are as at start.
/// </summary>
public unsafe class SlabModelTests(ITestOutputHelper output)
{
    private readonly record struct CacheSpec(string Name, int Size, int Align, SlabFlags Flags);

    private static readonly CacheSpec[] Specs =
    [
        new("model-1", 1, 0, SlabFlags.None),
        new("model-7", 7, 8, SlabFlags.None),
        new("model-24", 24, 16, SlabFlags.None),
        new("model-100", 100, 64, SlabFlags.None),
        new("model-333", 333, 0, SlabFlags.HwCacheAlign),
        new("model-1000", 1000, 256, SlabFlags.None),
        new("model-3000", 3000, 0, SlabFlags.HwCacheAlign),
        new("model-24-hw", 24, 0, SlabFlags.HwCacheAlign),
        new("model-40-a256", 40, 256, SlabFlags.HwCacheAlign),
    ];

    public enum OpKind { CacheAlloc, Kmalloc, Kzalloc, Kcalloc, KmallocNode, Free, Krealloc, Shrink, ShrinkAll }

    public readonly record struct Op(OpKind Kind, int A, int B)
    {
        public override string ToString() => $"{Kind}({A},{B})";
    }

    private static readonly Gen<int> KmallocSize = Gen.Frequency(
        (6, Gen.Int[1, 20000]),
        (3, Gen.Int[1, 300]),
        (2, Gen.Int[0, 15].Select(shift => 1 << shift)));

    private static readonly Gen<Op> GenOp = Gen.Frequency(
        (5, Gen.Int[0, Specs.Length - 1].Select(i => new Op(OpKind.CacheAlloc, i, 0))),
        (5, KmallocSize.Select(s => new Op(OpKind.Kmalloc, s, 0))),
        (1, KmallocSize.Select(s => new Op(OpKind.Kzalloc, s, 0))),
        (1, Gen.Select(Gen.Int[1, 64], Gen.Int[1, 300], (n, s) => new Op(OpKind.Kcalloc, n, s))),
        (1, KmallocSize.Select(s => new Op(OpKind.KmallocNode, s, 0))),
        (8, Gen.Int.NonNegative.Select(i => new Op(OpKind.Free, i, 0))),
        (2, Gen.Select(Gen.Int.NonNegative, KmallocSize, (i, s) => new Op(OpKind.Krealloc, i, s))),
        (1, Gen.Int[0, Specs.Length - 1].Select(i => new Op(OpKind.Shrink, i, 0))),
        (1, Gen.Const(new Op(OpKind.ShrinkAll, 0, 0))));

    private static readonly Gen<Op[]> GenOps = GenOp.Array[1, 300];

    private sealed class Live
    {
        public nint Pointer;
        public int Length;        // bytes the caller asked for (and stamped)
        public int Cache;         // index into the test's caches, or -1 for kmalloc
        public ulong Stamp;
        public nuint Slot;        // start of the slot (or large block) in the interval set
    }

    [Fact]
    public void RandomSequencesKeepEveryInvariant()
        => GenOps.Sample(ops => Run(ops, SlabFlags.None, SlabFlags.None), iter: 120, threads: 2, seed: null,
            print: ops => string.Join(" ", ops));

    [Fact]
    public void RandomSequencesKeepEveryInvariantWithSlubDebug()
        => GenOps.Sample(ops => Run(ops, SlabFlags.Debug, SlabFlags.Debug), iter: 40, threads: 2,
            print: ops => string.Join(" ", ops));

    [Fact]
    public void RandomSequencesKeepEveryInvariantWithFineSizeClasses()
        => GenOps.Sample(ops => Run(ops, SlabFlags.None, SlabFlags.None, classes: KmallocSizeClasses.Fine), iter: 60, threads: 2,
            print: ops => string.Join(" ", ops));

    [Fact]
    public void FixedLongSequenceLogsSlabInfo()
    {
        // One long deterministic run, so a failure reproduces without CsCheck and the slabinfo is visible in the log.
        var rnd = new Random(20240611);
        var ops = new Op[3000];
        for (int i = 0; i < ops.Length; i++)
        {
            ops[i] = (i % 3) switch
            {
                0 => new Op(OpKind.CacheAlloc, rnd.Next(Specs.Length), 0),
                1 => new Op(OpKind.Kmalloc, rnd.Next(1, 20001), 0),
                _ => new Op(rnd.Next(4) == 0 ? OpKind.Krealloc : OpKind.Free, rnd.Next(), rnd.Next(1, 20001)),
            };
        }
        Run(ops, SlabFlags.None, SlabFlags.None, output.WriteLine);
    }

    private static void Run(Op[] ops, SlabFlags kmallocFlags, SlabFlags cacheFlags, Action<string>? log = null,
        KmallocSizeClasses classes = KmallocSizeClasses.Kernel)
    {
        using var sys = NewSystem(64, kmallocFlags, classes);
        string baseline = Baseline(sys);
        var slab = sys.Slab;
        var caches = Specs.Select(s => slab.CreateCache(s.Name, s.Size, s.Align, s.Flags | cacheFlags)).ToArray();
        var live = new List<Live>();
        var slots = new IntervalSet();
        ulong stamps = 0x0123_4567_89ab_cdefUL;

        for (int step = 0; step < ops.Length; step++)
        {
            Op op = ops[step];
            try
            {
                switch (op.Kind)
                {
                    case OpKind.CacheAlloc:
                    {
                        KmemCache cache = caches[op.A];
                        byte* p = (byte*)cache.Alloc();
                        Assert.True(p != null, $"{cache.Name}: allocation failed");
                        CheckCacheObject(slab, caches, op.A, p);
                        nuint slot = (nuint)p - (nuint)cache.RedLeftPad;
                        slots.Add(slot, (nuint)cache.SlotSize);
                        Add(live, p, cache.ObjectSize, op.A, slot, ref stamps);
                        break;
                    }
                    case OpKind.Kmalloc or OpKind.Kzalloc or OpKind.KmallocNode or OpKind.Kcalloc:
                    {
                        nuint size = op.Kind == OpKind.Kcalloc ? (nuint)(op.A * op.B) : (nuint)op.A;
                        byte* p = (byte*)(op.Kind switch
                        {
                            OpKind.Kmalloc => slab.Kmalloc(size),
                            OpKind.Kzalloc => slab.Kzalloc(size),
                            OpKind.Kcalloc => slab.Kcalloc((nuint)op.A, (nuint)op.B),
                            _ => slab.KmallocNode(size, Gfp.Kernel, 0),
                        });
                        Assert.True(p != null, $"{op}: allocation failed");
                        if (op.Kind is OpKind.Kzalloc or OpKind.Kcalloc) AssertBytes(p, (int)size, 0, $"{op} must return zeroed memory");
                        CheckKmallocObject(slab, p, size, fresh: true);
                        Add(live, p, (int)size, -1, AddKmallocSlot(slab, slots, p), ref stamps);
                        break;
                    }
                    case OpKind.Free when live.Count > 0:
                    {
                        int index = op.A % live.Count;
                        Live o = live[index];
                        AssertStamp((byte*)o.Pointer, o.Length, o.Stamp);
                        slots.Remove(o.Slot);
                        if (o.Cache >= 0) caches[o.Cache].Free((void*)o.Pointer);
                        else slab.Kfree((void*)o.Pointer);
                        live[index] = live[^1];
                        live.RemoveAt(live.Count - 1);
                        break;
                    }
                    case OpKind.Krealloc:
                    {
                        Live? o = null;
                        for (int i = 0; i < live.Count && o is null; i++)
                        {
                            Live candidate = live[(int)(((long)op.A + i) % live.Count)];
                            if (candidate.Cache < 0) o = candidate;
                        }
                        if (o is null) break;
                        byte* p = (byte*)o.Pointer;
                        nuint usable = slab.Ksize(p);
                        nuint newSize = (nuint)op.B;
                        slots.Remove(o.Slot);
                        byte* q = (byte*)slab.Krealloc(p, newSize);
                        Assert.True(q != null, $"krealloc to {newSize} failed");
                        if (newSize <= usable) Assert.True(q == p, $"krealloc {o.Length} -> {newSize} within the usable {usable} bytes must stay in place");
                        else Assert.True(q != p, $"krealloc {o.Length} -> {newSize} beyond the usable {usable} bytes must move");
                        AssertStamp(q, Math.Min(o.Length, (int)newSize), o.Stamp);
                        CheckKmallocObject(slab, q, newSize, fresh: q != p);
                        o.Slot = AddKmallocSlot(slab, slots, q);
                        o.Pointer = (nint)q;
                        o.Length = (int)newSize;
                        o.Stamp = NextStamp(ref stamps);
                        Stamp(q, o.Length, o.Stamp);
                        break;
                    }
                    case OpKind.Shrink:
                        caches[op.A].Shrink();
                        foreach (Live o in live) AssertStamp((byte*)o.Pointer, o.Length, o.Stamp);
                        break;
                    case OpKind.ShrinkAll:
                        slab.ShrinkAll();
                        foreach (Live o in live) AssertStamp((byte*)o.Pointer, o.Length, o.Stamp);
                        break;
                }
            }
            catch (Exception e)
            {
                throw new StepException($"step {step} ({op}) of {ops.Length}: {e.Message}", e);
            }
        }

        if (log != null)
        {
            log($"{live.Count} objects live at the end of the sequence");
            log(slab.SlabInfo());
        }

        // Everything still holds its contents; free in an order unrelated to allocation order.
        var order = live.OrderBy(o => o.Stamp * 0x9E3779B97F4A7C15UL).ToList();
        foreach (Live o in order)
        {
            AssertStamp((byte*)o.Pointer, o.Length, o.Stamp);
            if (o.Cache >= 0) caches[o.Cache].Free((void*)o.Pointer);
            else slab.Kfree((void*)o.Pointer);
        }
        slab.ShrinkAll();
        foreach (KmemCache cache in slab.Caches)
        {
            Assert.Equal(0, cache.ActiveObjects);
            Assert.Empty(cache.Validate());
            Assert.Empty(cache.Reports);
        }
        foreach (KmemCache cache in caches) cache.Destroy();
        AssertBackToBaseline(sys, baseline);
    }

    private static void Add(List<Live> live, byte* p, int length, int cache, nuint slot, ref ulong stamps)
    {
        var o = new Live { Pointer = (nint)p, Length = length, Cache = cache, Stamp = NextStamp(ref stamps), Slot = slot };
        Stamp(p, length, o.Stamp);
        live.Add(o);
    }

    private static ulong NextStamp(ref ulong state)
    {
        state = state * 6364136223846793005UL + 1442695040888963407UL;
        return state ^ (state >> 29);
    }

    private static void CheckCacheObject(SlabAllocator slab, KmemCache[] caches, int index, byte* p)
    {
        KmemCache cache = caches[index];
        CacheSpec spec = Specs[index];
        nuint a = (nuint)p;
        Assert.True(a % (nuint)cache.Align == 0, $"{cache.Name}: 0x{a:x} not aligned to {cache.Align}");
        Assert.True(a % (nuint)Math.Max(spec.Align, 8) == 0, $"{cache.Name}: 0x{a:x} not aligned to the requested {spec.Align}");
        if ((spec.Flags & SlabFlags.HwCacheAlign) != 0 && spec.Size > 32)
            Assert.True(a % 64 == 0, $"{cache.Name}: 0x{a:x} not cache-line aligned");
        Assert.True(cache.Owns(p), $"{cache.Name} does not own its own object 0x{a:x}");
        Assert.False(caches[(index + 1) % caches.Length].Owns(p), "another cache claims the object");
        Assert.False(cache.Owns(p + 1), "Owns must reject an interior pointer");
        Assert.True(cache.SlotSize >= cache.ObjectSize + cache.RedLeftPad);
        Assert.Equal((nuint)cache.ObjectSize, slab.Ksize(p));
    }

    /// <summary>Checks a kmalloc object; <paramref name="fresh"/> is false for a block krealloc resized in place (it keeps its old home).</summary>
    private static void CheckKmallocObject(SlabAllocator slab, byte* p, nuint size, bool fresh)
    {
        nuint a = (nuint)p;
        Assert.True(a % 8 == 0, $"kmalloc({size}) = 0x{a:x} is not word aligned");
        // Natural alignment is a property of a new block; krealloc in place keeps the old block's alignment.
        if (fresh && BitOperations.IsPow2(size))
            Assert.True(a % size == 0, $"kmalloc({size}) = 0x{a:x} is not naturally aligned");
        nuint usable = slab.Ksize(p);
        Assert.True(usable >= size, $"ksize {usable} < requested {size}");
        KmemCache? cache = fresh ? slab.KmallocCache(size) : slab.KmallocCaches.FirstOrDefault(c => c.Owns(p));
        if (cache != null)
        {
            Assert.True(cache.Owns(p), $"{cache.Name} does not own kmalloc({size}) = 0x{a:x}");
            Assert.Equal((nuint)cache.ObjectSize, usable);
        }
        else
        {
            Assert.True(!fresh || size > SlabAllocator.KmallocMaxCacheSize);
            Assert.True(a % PageFrame.PageSize == 0, "a large kmalloc is page aligned");
            if (fresh) Assert.True(usable < 2 * size + PageFrame.PageSize, $"large ksize {usable} for {size}: more than the next power of two pages");
            foreach (KmemCache k in slab.KmallocCaches) Assert.False(k.Owns(p), $"{k.Name} claims a large kmalloc block");
        }
    }

    /// <summary>Adds the whole slot of a kmalloc object (red zones and metadata included) to the live set.</summary>
    private static nuint AddKmallocSlot(SlabAllocator slab, IntervalSet slots, byte* p)
    {
        KmemCache? k = slab.KmallocCaches.FirstOrDefault(c => c.Owns(p));
        nuint start = k != null ? (nuint)p - (nuint)k.RedLeftPad : (nuint)p;
        slots.Add(start, k != null ? (nuint)k.SlotSize : slab.Ksize(p));
        return start;
    }

    private sealed class StepException(string message, Exception inner) : Exception(message, inner);

    /// <summary>Disjoint half-open address ranges; adding one that overlaps a present range fails the test.</summary>
    private sealed class IntervalSet
    {
        private readonly SortedList<nuint, nuint> _ranges = new();

        public void Add(nuint start, nuint length)
        {
            nuint end = start + length;
            IList<nuint> keys = _ranges.Keys;
            int lo = 0, hi = keys.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (keys[mid] < start) lo = mid + 1; else hi = mid;
            }
            if (lo < keys.Count && keys[lo] < end)
                Assert.Fail($"[0x{start:x}, 0x{end:x}) overlaps the live range starting at 0x{keys[lo]:x}");
            if (lo > 0 && _ranges.Values[lo - 1] > start)
                Assert.Fail($"[0x{start:x}, 0x{end:x}) overlaps the live range [0x{keys[lo - 1]:x}, 0x{_ranges.Values[lo - 1]:x})");
            _ranges.Add(start, end);
        }

        public void Remove(nuint start)
        {
            if (!_ranges.Remove(start)) Assert.Fail($"no live range starts at 0x{start:x}");
        }
    }
}
