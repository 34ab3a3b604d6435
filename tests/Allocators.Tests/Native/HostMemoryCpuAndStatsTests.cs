using Allocators.Native;

namespace Allocators.Tests.Native;

// Alone: the resident-set checks read the whole process, which other tests grow and shrink meanwhile.
[Collection(nameof(Allocators.Tests.Slab.SerialThreadContexts))]
public sealed unsafe class HostMemoryCpuAndStatsTests
{
    [Fact]
    public void CurrentCpuIsWithinPossibleCpus()
    {
        int possible = HostMemory.PossibleCpus;
        Assert.True(possible >= 1);
        Assert.True(possible >= HostMemory.OnlineCpus);
        for (int i = 0; i < 100; i++)
        {
            int cpu = HostMemory.CurrentCpu();
            Assert.InRange(cpu, 0, possible - 1);
        }
    }

    [Fact]
    public void RawCpuQueriesAgreeWithTheWrappers()
    {
        Assert.InRange(Libc.SchedGetCpu(), 0, HostMemory.PossibleCpus - 1);
        Assert.Equal(HostMemory.OnlineCpus, Libc.GetNprocs());
        Assert.True(Libc.GetNprocsConf() >= Libc.GetNprocs());
    }

    [Fact]
    public void ResidentSetGrowsWhenPagesAreTouched()
    {
        const nuint length = 64 * 1024 * 1024;
        long before = HostMemory.ResidentSetBytes();
        Assert.True(before > 0);

        byte* p = (byte*)HostMemory.Reserve(length, HostMemory.PageSize);
        try
        {
            HostMemory.MapAnonymousFixed(p, length);
            for (nuint i = 0; i < length; i += HostMemory.PageSize)
            {
                p[i] = 1;
            }

            long during = HostMemory.ResidentSetBytes();
            Assert.True(during - before >= (long)length / 2, $"RSS went from {before} to {during}");
            long peak = HostMemory.PeakResidentSetBytes();
            Assert.True(peak >= (long)length, $"peak {peak} during {during} before {before}");
        }
        finally
        {
            HostMemory.Release(p, length);
        }
    }
}
