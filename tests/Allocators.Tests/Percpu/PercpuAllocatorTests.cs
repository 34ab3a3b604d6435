using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.PageAlloc;
using Allocators.Percpu;
using Allocators.Physical;

namespace Allocators.Tests.Percpu;

public unsafe class PercpuAllocatorTests
{
    /// <summary>All memory low whatever ALLOCATORS_HIGHMEM says: chunks are kernel (direct-map) memory and pcpu_alloc_test fills 128 MiB.</summary>
    private static (PhysicalMemory, PageAllocator) NewPages(long size = 128L << 20)
    {
        var memory = new PhysicalMemory(new PhysicalMemoryOptions { Size = size, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow });
        return (memory, new PageAllocator(memory));
    }

    /// <summary>The kernel's pcpu_alloc_test: 35,000 allocations of 1..1024 bytes aligned 2..2048, distinct, aligned, disjoint per CPU, all freed.</summary>
    [Fact]
    public void PcpuAllocTest()
    {
        var (memory, pages) = NewPages();
        using var _m = memory;
        using var _p = pages;
        pages.DrainAllPages();
        string initial = pages.BuddyInfo();
        using (var percpu = new PercpuAllocator(pages, possibleCpus: 4))
        {
            var rnd = new Random(42);
            var live = new List<(nint Ptr, int Size)>();
            for (int i = 0; i < 35_000; i++)
            {
                int size = rnd.Next(1, 1025);
                int align = 1 << rnd.Next(1, 12);
                nint p = percpu.AllocPercpu(size, align);
                Assert.NotEqual(0, p);
                Assert.Equal(0, p % align);
                live.Add((p, size));
            }
            // Distinct and non-overlapping in unit 0 (and so in every unit, since all units share offsets).
            var sorted = live.OrderBy(x => x.Ptr).ToArray();
            for (int i = 1; i < sorted.Length; i++) Assert.True(sorted[i - 1].Ptr + sorted[i - 1].Size <= sorted[i].Ptr, "overlap");
            // Every CPU's copy is writable and separate.
            foreach (var (ptr, size) in live.Take(2000))
                for (int cpu = 0; cpu < percpu.PossibleCpus; cpu++) *(byte*)percpu.PerCpuPtr(ptr, cpu) = (byte)cpu;
            foreach (var (ptr, size) in live.Take(2000))
                for (int cpu = 0; cpu < percpu.PossibleCpus; cpu++) Assert.Equal((byte)cpu, *(byte*)percpu.PerCpuPtr(ptr, cpu));
            foreach (var (ptr, _) in live.OrderBy(_ => rnd.Next())) percpu.FreePercpu(ptr);
            Assert.Equal(1, percpu.ChunkCount);
        }
        pages.DrainAllPages();
        Assert.Equal(initial, pages.BuddyInfo());
    }

    [Fact]
    public void MemoryIsZeroedAndReusedZeroed()
    {
        var (memory, pages) = NewPages(16L << 20);
        using var _m = memory;
        using var _p = pages;
        using var percpu = new PercpuAllocator(pages, possibleCpus: 2);
        var v = percpu.AllocPercpu<long>();
        v.PerCpu(0) = 5;
        v.PerCpu(1) = 7;
        Assert.Equal(percpu.UnitSize, (int)((nint)percpu.PerCpuPtr(v.Pointer, 1) - v.Pointer));
        v.Free();
        var w = percpu.AllocPercpu<long>();
        Assert.Equal(v.Pointer, w.Pointer);
        Assert.Equal(0, w.PerCpu(0));
        Assert.Equal(0, w.PerCpu(1));
        long sum = 0;
        w.ForEachPossibleCpu((int cpu, ref long value) => { value = cpu + 1; sum += value; });
        Assert.Equal(3, sum);
    }

    [Fact]
    public void BadFreeThrows()
    {
        var (memory, pages) = NewPages(16L << 20);
        using var _m = memory;
        using var _p = pages;
        using var percpu = new PercpuAllocator(pages, possibleCpus: 2);
        nint p = percpu.AllocPercpu(64, 64);
        var ex = Assert.Throws<MemoryCorruptionException>(() => percpu.FreePercpu(p + 8));
        Assert.Contains($"0x{p + 8:x}", ex.Message);
        percpu.FreePercpu(p);
        Assert.Throws<MemoryCorruptionException>(() => percpu.FreePercpu(p));
    }

    [Fact]
    public void ChunksAreCreatedAndDestroyedOnDemand()
    {
        var (memory, pages) = NewPages(64L << 20);
        using var _m = memory;
        using var _p = pages;
        using var percpu = new PercpuAllocator(pages, possibleCpus: 2, unitSize: 4096);
        var ptrs = new List<nint>();
        for (int i = 0; i < 40; i++) ptrs.Add(percpu.AllocPercpu(1024, 8)); // 4 per unit -> 10 chunks
        Assert.Equal(10, percpu.ChunkCount);
        foreach (var p in ptrs) percpu.FreePercpu(p);
        Assert.Equal(1, percpu.ChunkCount);
    }

    [Fact]
    public void CounterIsExactAcrossThreads()
    {
        var (memory, pages) = NewPages(16L << 20);
        using var _m = memory;
        using var _p = pages;
        using var percpu = new PercpuAllocator(pages);
        using var counter = new PercpuCounter(percpu, batch: 16);
        const int Threads = 4, PerThread = 200_000;
        var threads = Enumerable.Range(0, Threads).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < PerThread; i++) counter.Increment();
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Equal((long)Threads * PerThread, counter.Sum());
        Assert.InRange(counter.Read(), (long)Threads * PerThread - 16L * percpu.PossibleCpus, (long)Threads * PerThread + 16L * percpu.PossibleCpus);
    }
}
