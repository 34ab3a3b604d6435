using Allocators.PageAlloc;
using Allocators.Physical;
using CsCheck;
using Xunit.Abstractions;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// Random sequences of page allocator operations checked against a reference model: the set of live blocks
/// (pfn ranges, orders, zones, stamps). After every operation the model's view of free memory must match the
/// allocator's exactly, and every success or failure must be one the watermark rules allow.
/// </summary>
public sealed unsafe class BuddyModelPropertyTests(ITestOutputHelper output)
{
    public enum OpKind { Alloc, Free, Drain, GetPut }

    public readonly record struct Op(OpKind Kind, int Order, Gfp Gfp, bool ByAddress, int Pick)
    {
        public override string ToString() => Kind switch
        {
            OpKind.Alloc => $"Alloc(o{Order}, {Gfp.Describe()}{(ByAddress ? ", addr" : "")})",
            OpKind.Drain => "Drain",
            _ => $"{Kind}({Pick})",
        };
    }

    private static readonly Gfp[] GfpChoices =
    [
        Gfp.Kernel, Gfp.Atomic, Gfp.Kernel | Gfp.Zero, Gfp.Atomic | Gfp.Zero, Gfp.Kernel | Gfp.Comp,
        Gfp.Kernel | Gfp.Comp | Gfp.Zero, Gfp.Atomic | Gfp.Comp, Gfp.KernelDma, Gfp.KernelDma32, Gfp.Atomic | Gfp.Dma,
        Gfp.Atomic | Gfp.Dma32 | Gfp.Zero, Gfp.KernelDma32 | Gfp.Comp, Gfp.NoWait, Gfp.Kernel | Gfp.MemAlloc,
        Gfp.Kernel | Gfp.High,
    ];

    private static readonly Gen<int> GenOrder = Gen.Frequency((5, Gen.Int[0, 3]), (3, Gen.Int[4, 7]), (2, Gen.Int[8, 10]));

    private static readonly Gen<Op> GenOp = Gen.Frequency(
        (10, Gen.Select(GenOrder, Gen.Int[0, GfpChoices.Length - 1], Gen.Bool, Gen.Bool,
            (order, g, noWarn, byAddress) => new Op(OpKind.Alloc, order, GfpChoices[g] | (noWarn ? Gfp.NoWarn : 0), byAddress, 0))),
        (7, Gen.Int[0, 1 << 20].Select(p => new Op(OpKind.Free, 0, 0, false, p))),
        (1, Gen.Const(new Op(OpKind.Drain, 0, 0, false, 0))),
        (2, Gen.Int[0, 1 << 20].Select(p => new Op(OpKind.GetPut, 0, 0, false, p))));

    private static readonly Gen<Op[]> GenOps = GenOp.Array[1, 160];

    public static TheoryData<string> Configurations => new() { "flat64-dma", "sparse32-sections8", "numa2-flat32" };

    /// <summary>The model frees a block at once; KASAN's quarantine holds it back on purpose, so no checked mode here.</summary>
    private static CheckedModeOptions Unchecked => CheckedModeOptions.Parse("");

    // Free page reporting off: it takes blocks off the free lists while the host call runs (as the kernel's isolates
    // them), so a sample slower than its delay (a loaded run) would see free counts the model cannot predict.
    private static MemorySystem Build(string configuration, Action<string> warn) => configuration switch
    {
        // DMA 4 MiB, DMA32 16 MiB, Normal 44 MiB.
        "flat64-dma" => new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 64 * MiB, Checks = Unchecked },
            PageAllocator = new PageAllocatorOptions { Warn = warn, ReleaseFreeMemory = false },
        }),
        // Four separately allocated 8 MiB sections; no growth so that the model's totals stay fixed.
        "sparse32-sections8" => new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 32 * MiB, Model = MemoryModel.Sparse, SectionSize = 8 * MiB, MaxSize = 32 * MiB,
                DmaZoneSize = 4 * MiB, Dma32ZoneSize = 8 * MiB, Checks = Unchecked,
            },
            PageAllocator = new PageAllocatorOptions { Warn = warn, ReleaseFreeMemory = false },
        }),
        // Two nodes of 16 MiB; node 0 has DMA and DMA32 zones of 4 MiB each, so zone fallback crosses nodes.
        "numa2-flat32" => new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 32 * MiB, Nodes = 2, DmaZoneSize = 4 * MiB, Dma32ZoneSize = 4 * MiB, Checks = Unchecked },
            PageAllocator = new PageAllocatorOptions { Warn = warn, ReleaseFreeMemory = false },
        }),
        _ => throw new ArgumentException(configuration),
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void RandomAllocFreeSequencesMatchTheReferenceModel(string configuration)
    {
        long allocations = 0, failures = 0, frees = 0;
        GenOps.Sample(ops =>
        {
            using var harness = new Harness(Build, configuration);
            foreach (Op op in ops) harness.Apply(op);
            harness.FreeEverythingAndCheckInitialState();
            Interlocked.Add(ref allocations, harness.Allocations);
            Interlocked.Add(ref failures, harness.Failures);
            Interlocked.Add(ref frees, harness.Frees);
        }, iter: 150, threads: 2, print: ops => string.Join(", ", ops), writeLine: output.WriteLine);
        output.WriteLine($"{configuration}: {allocations} allocations, {failures} failures, {frees} frees");
        Assert.True(failures > 0 && allocations > 10 * failures, "the sequences should reach exhaustion now and then, but mostly succeed");
    }

    /// <summary>The system under test plus the reference model of what is live.</summary>
    private sealed class Harness : IDisposable
    {
        private sealed record Live(nint Page, int Order, Gfp Gfp, ulong Tag, bool ByAddress);

        private readonly MemorySystem _system;
        private readonly PageAllocator _pa;
        private readonly List<Live> _live = new();
        private readonly int[] _owner;                 // pfn -> 1 while the page is part of a live block, 0 when free
        private readonly long[] _livePagesPerZone;
        private readonly string _initialBuddyInfo;
        private readonly long[] _initialBlocks;
        private readonly long _alloc0, _freed0, _failures0, _warnings0;
        private long _allocatedPages, _freedPages, _failures, _expectedWarnings;
        private int _warnCalls;

        public long Allocations { get; private set; }
        public long Failures => _failures;
        public long Frees { get; private set; }
        private ulong _nextTag = 0x5EED_0000_0000;

        public Harness(Func<string, Action<string>, MemorySystem> build, string configuration)
        {
            _system = build(configuration, _ => Interlocked.Increment(ref _warnCalls));
            _pa = _system.Pages;
            _owner = new int[(int)_system.Memory.MaxPfn];
            _livePagesPerZone = new long[_pa.Zones.Count];
            _initialBuddyInfo = _pa.BuddyInfo();
            _initialBlocks = _pa.FreeBlockCounts().Cast<long>().ToArray();
            _alloc0 = _pa.PagesAllocated;
            _freed0 = _pa.PagesFreed;
            _failures0 = _pa.AllocFailures;
            _warnings0 = _pa.Warnings;
        }

        private long ModelFree(Zone zone) => zone.ManagedPages - _livePagesPerZone[zone.Id];

        public void Apply(Op op)
        {
            switch (op.Kind)
            {
                case OpKind.Alloc: Alloc(op.Order, op.Gfp, op.ByAddress); break;
                case OpKind.Free: if (_live.Count > 0) Free(op.Pick); break;
                case OpKind.GetPut: if (_live.Count > 0) GetPut(op.Pick); break;
                case OpKind.Drain:
                    _pa.DrainAllPages();
                    Assert.Equal(0, _pa.PcpPages);
                    foreach (Zone z in _pa.Zones) Assert.Equal(ModelFree(z), z.FreePages);
                    _pa.CheckConsistency();
                    break;
            }
            CheckGlobalInvariants();
        }

        private void Alloc(int order, Gfp gfp, bool byAddress)
        {
            long n = 1L << order;
            var freeBefore = _pa.Zones.Select(ModelFree).ToArray();
            PageFrame* page;
            if (byAddress)
            {
                byte* address = _pa.GetFreePages(gfp, order);
                page = address == null ? null : _pa.VirtToPage(address);
                if (address != null) Assert.True(_pa.PageAddress(page) == address, "GetFreePages must return the block's first byte");
            }
            else
            {
                page = _pa.AllocPages(gfp, order);
            }

            if (page == null)
            {
                CheckLegitimateFailure(order, gfp);
                _failures++;
                if ((gfp & Gfp.NoWarn) == 0) _expectedWarnings++;
                return;
            }

            ulong pfn = page->Pfn;
            Assert.True(pfn % (ulong)n == 0, $"pfn 0x{pfn:x} is not aligned to order {order}");
            Assert.True(_pa.PfnToPage(pfn) == page);
            Zone zone = _pa.Zones[page->ZoneId];
            Assert.True(zone.Type <= gfp.HighestZone(), $"{gfp.Describe()} got a page from {zone}");
            Assert.True(zone.Populated);
            for (long i = 0; i < n; i++)
            {
                Assert.True(_owner[(int)pfn + (int)i] == 0,
                    $"pfn 0x{pfn + (ulong)i:x} handed out twice (order {order} at 0x{pfn:x} overlaps a live block)");
                Assert.Equal(page->ZoneId, (page + i)->ZoneId);
            }

            Assert.True(page->Has(PageFlags.Allocated));
            Assert.False(page->Has(PageFlags.Buddy) || page->Has(PageFlags.Pcp));
            Assert.Equal(order, page->Order);
            Assert.Equal(1, page->RefCount);
            bool comp = (gfp & Gfp.Comp) != 0 && order > 0;
            Assert.Equal(comp, page->Has(PageFlags.Head));
            if (comp)
            {
                for (long i = 1; i < n; i++)
                {
                    Assert.True((page + i)->Has(PageFlags.Tail));
                    Assert.True(PageFrame.CompoundHead(page + i) == page);
                }
            }

            // Reserve rules: pfmemalloc only for __GFP_MEMALLOC; anything else passed the watermark for its flags,
            // counting the zone's pages on per-thread lists as free (they are).
            if (page->Has(PageFlags.PfMemAlloc))
            {
                Assert.True((gfp & Gfp.MemAlloc) != 0, $"{gfp.Describe()} got a pfmemalloc page");
            }
            else
            {
                long free = freeBefore[zone.Id] - (n - 1);
                Assert.True(free > AdjustedMin(zone, gfp),
                    $"{gfp.Describe()} order {order} succeeded in {zone} with {freeBefore[zone.Id]} free pages, mark {AdjustedMin(zone, gfp)}");
            }

            if ((gfp & Gfp.Zero) != 0) Assert.True(IsZero(_pa, page, order), "__GFP_ZERO block is not zero");

            ulong tag = _nextTag;
            _nextTag += 1UL << 16;
            Stamp(_pa, page, order, tag);
            _live.Add(new Live((nint)page, order, gfp, tag, byAddress));
            for (long i = 0; i < n; i++) _owner[(int)pfn + (int)i] = 1;
            _livePagesPerZone[zone.Id] += n;
            _allocatedPages += n;
            Allocations++;
        }

        /// <summary>A failed allocation drained the per-thread lists and found no zone it was allowed to use.</summary>
        private void CheckLegitimateFailure(int order, Gfp gfp)
        {
            Assert.Equal(0, _pa.PcpPages);
            foreach (Zone z in _pa.Zones) Assert.Equal(ModelFree(z), z.FreePages);
            bool memalloc = (gfp & Gfp.MemAlloc) != 0 && (gfp & Gfp.NoMemAlloc) == 0;
            foreach (Zone z in AllowedZones(_pa, gfp))
            {
                bool block = HasBlockOfAtLeast(z, order);
                if (memalloc)
                {
                    Assert.False(block, $"{gfp.Describe()} order {order} failed although {z} has a free block");
                }
                else
                {
                    // lowmem_reserve: a lower zone keeps pages from an allocation that could have used a higher one.
                    long mark = AdjustedMin(z, gfp) + z.LowmemReserve(gfp.HighestZone());
                    bool aboveMark = z.FreePages - ((1L << order) - 1) > mark;
                    Assert.False(block && aboveMark,
                        $"{gfp.Describe()} order {order} failed although {z} has {z.FreePages} free pages (mark {mark}) and a block");
                }
            }
        }

        private void Free(int pick)
        {
            int index = pick % _live.Count;
            Live b = _live[index];
            var page = (PageFrame*)b.Page;
            long n = 1L << b.Order;
            CheckStamp(_pa, page, b.Order, b.Tag);
            bool comp = (b.Gfp & Gfp.Comp) != 0 && b.Order > 0;
            int zoneId = page->ZoneId;
            if (comp && (pick & 1) != 0)
                _pa.PutPage(page + 1 + (pick >> 1) % (n - 1));    // put_page on a tail frees the whole compound page
            else if (b.ByAddress)
                _pa.FreePages(_pa.PageAddress(page), b.Order);
            else
                _pa.FreePages(page, b.Order);

            Assert.False(page->Has(PageFlags.Allocated));
            Assert.False(page->Has(PageFlags.Head));
            Assert.False(page->Has(PageFlags.PfMemAlloc));
            Assert.Equal(0, page->RefCount);
            for (long i = 1; i < n; i++) Assert.False((page + i)->Has(PageFlags.Tail));

            _live[index] = _live[^1];
            _live.RemoveAt(_live.Count - 1);
            for (long i = 0; i < n; i++) _owner[(int)page->Pfn + (int)i] = 0;
            _livePagesPerZone[zoneId] -= n;
            _freedPages += n;
            Frees++;
        }

        private void GetPut(int pick)
        {
            Live b = _live[pick % _live.Count];
            var head = (PageFrame*)b.Page;
            long n = 1L << b.Order;
            bool comp = (b.Gfp & Gfp.Comp) != 0 && b.Order > 0;
            PageFrame* target = comp ? head + pick % n : head;
            _pa.GetPage(target);
            Assert.Equal(2, _pa.PageRefCount(target));
            Assert.Equal(2, head->RefCount);
            _pa.PutPage(target);
            Assert.Equal(1, head->RefCount);
            Assert.True(head->Has(PageFlags.Allocated), "put_page with another reference left must not free");
            CheckStamp(_pa, head, b.Order, b.Tag);
        }

        private void CheckGlobalInvariants()
        {
            long live = _livePagesPerZone.Sum();
            Assert.Equal(_pa.ManagedPages - live, _pa.NrFreePages + _pa.PcpPages);
            Assert.Equal(_allocatedPages, _pa.PagesAllocated - _alloc0);
            Assert.Equal(_freedPages, _pa.PagesFreed - _freed0);
            Assert.Equal(_failures, _pa.AllocFailures - _failures0);
            Assert.Equal(_expectedWarnings, _pa.Warnings - _warnings0);
            Assert.Equal(_expectedWarnings, Volatile.Read(ref _warnCalls));
        }

        public void FreeEverythingAndCheckInitialState()
        {
            while (_live.Count > 0) Free(_live.Count - 1);
            CheckGlobalInvariants();
            _pa.DrainAllPages();
            Assert.Equal(0, _pa.PcpPages);
            Assert.Equal(_pa.ManagedPages, _pa.NrFreePages);
            _pa.CheckConsistency();
            Assert.Equal(_initialBuddyInfo, _pa.BuddyInfo());
            Assert.Equal(_initialBlocks, _pa.FreeBlockCounts().Cast<long>().ToArray());
            Assert.Equal(_pa.PagesAllocated - _alloc0, _pa.PagesFreed - _freed0);
        }

        public void Dispose() => _system.Dispose();
    }
}
