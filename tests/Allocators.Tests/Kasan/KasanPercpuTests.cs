using Allocators.Kasan;
using Allocators.Percpu;

namespace Allocators.Tests.Kasan;

/// <summary>
/// KASAN on per-CPU memory: every unit of a chunk is poisoned outside live allocations (to exactly the size asked),
/// the typed accessors check the copy they hand out, and a use after free_percpu is reported with its unit.
/// </summary>
public sealed unsafe class KasanPercpuTests
{
    [Fact]
    public void EveryUnitIsPoisonedOutsideLiveAllocations()
    {
        using MemorySystem sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        PercpuAllocator percpu = sys.Percpu;
        nint p = percpu.AllocPercpu(12);
        for (int cpu = 0; cpu < percpu.PossibleCpus; cpu++)
        {
            var unit = (byte*)percpu.PerCpuPtr(p, cpu);
            Assert.Equal((byte)0, kasan.ShadowOf(unit));
            Assert.Equal((byte)4, kasan.ShadowOf(unit + 8)); // the last 4 of 12 bytes; the rest of the granule is not
            Assert.Equal(KasanShadowCode.PercpuInvalid, kasan.ShadowOf(unit + 16));
            kasan.Check(unit, 12, write: true, "test");
            Assert.Throws<KasanException>(() => kasan.Check(unit, 13, write: false, "test"));
        }
        percpu.FreePercpu(p);
        for (int cpu = 0; cpu < percpu.PossibleCpus; cpu++)
            Assert.Equal(KasanShadowCode.PercpuInvalid, kasan.ShadowOf(percpu.PerCpuPtr(p, cpu)));
        Assert.Equal(percpu.PossibleCpus, kasan.Reports.Count(r => r.Type == "percpu-out-of-bounds"));
    }

    [Fact]
    public void AUseAfterFreePercpuIsReportedWithItsUnit()
    {
        using MemorySystem sys = KasanSlabTests.NewSystem();
        KasanShadow kasan = sys.Memory.Kasan!;
        Percpu<long> keep = sys.Percpu.AllocPercpu<long>();
        Percpu<long> counter = sys.Percpu.AllocPercpu<long>();
        int last = sys.Percpu.PossibleCpus - 1;
        counter.PerCpu(last) = 5;
        counter.ThisCpu += 1;
        counter.Free();

        Assert.Throws<KasanException>(() => counter.PerCpu(last) = 6);
        KasanReport r = KasanSlabTests.Single(kasan, "percpu-out-of-bounds", sys.Percpu.PerCpuPtr(counter.Pointer, last), sizeof(long), write: false);
        Assert.Contains("in per_cpu_ptr", r.Text);
        Assert.Contains($"per-CPU chunk at ", r.Text);
        Assert.Contains($"unit {last} (CPU {last}), offset ", r.Text);
        Assert.Throws<KasanException>(() => counter.ThisCpu);

        // The variable beside it is untouched by the report and stays usable.
        keep.ForEachPossibleCpu((int cpu, ref long v) => v = cpu);
        Assert.Equal(last, keep.PerCpu(last));
        keep.Free();
    }

    [Fact]
    public void WithoutKasanTheAccessorsCheckNothing()
    {
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new Physical.PhysicalMemoryOptions { Size = 16 << 20, Checks = Physical.CheckedModeOptions.Parse("") },
        });
        Assert.Null(sys.Percpu.Kasan);
        Percpu<long> v = sys.Percpu.AllocPercpu<long>();
        v.ThisCpu = 3;
        Assert.Equal(3, v.ThisCpu);
        v.Free();
    }
}
