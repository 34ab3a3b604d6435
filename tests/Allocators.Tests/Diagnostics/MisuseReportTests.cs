using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Physical;
using static Allocators.Tests.Diagnostics.ReportTriggers;

namespace Allocators.Tests.Diagnostics;

/// <summary>PageAllocator.MisuseDetected: every refused call of any layer, reported once, before it is thrown.</summary>
public sealed unsafe class MisuseReportTests
{
    private static MemorySystem NewSystem()
        => new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 16L << 20 } });

    [Fact]
    public void EachLayersRefusalIsReportedOnceWithTheExceptionThrown()
    {
        using var sys = NewSystem();
        var seen = new List<MemoryCorruptionException>();
        sys.Pages.MisuseDetected += seen.Add;

        var slab = DoubleFree(sys, out _);
        var page = DoublePageFree(sys);
        var kfree = Assert.Throws<MemoryCorruptionException>(() => sys.Slab.Kfree((void*)0x1000));
        ulong area = sys.Vmalloc.Vmalloc(8192);
        sys.Vmalloc.Vfree(area);
        var vfree = Assert.ThrowsAny<MemoryCorruptionException>(() => sys.Vmalloc.Vfree(area));

        Assert.Equal(new MemoryCorruptionException[] { slab, page, kfree, vfree }, seen);
        Assert.Equal(4, sys.Pages.MisuseReports);
    }
}
