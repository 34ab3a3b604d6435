using Allocators.PageAlloc;
using Allocators.Physical;
using Xunit.Abstractions;

namespace Allocators.Tests.PageAlloc;

public unsafe class Smoke(ITestOutputHelper output)
{
    [Fact]
    public void BootAndPrint()
    {
        using var sys = new MemorySystem();
        output.WriteLine(sys.Pages.BuddyInfo());
        var p = sys.Pages.AllocPages(Gfp.Kernel, 0);
        Assert.True(p != null);
        sys.Pages.FreePages(p, 0);
        sys.Pages.DrainAllPages();
        output.WriteLine(sys.Pages.BuddyInfo());
        output.WriteLine(sys.Pages.ZoneInfo());
        output.WriteLine(sys.Pages.VmStat());
    }
}
