using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Tests.Reclaim;

/// <summary>Shrinkers get the allocation's gfp, node and a page budget (struct shrink_control).</summary>
public sealed unsafe class ShrinkControlTests
{
    [Fact]
    public void AShrinkerSeesTheAllocationsGfpNodeAndBudget()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 8L << 20 },
            PageAllocator = new PageAllocatorOptions { AutoGrow = false, ReleaseFreeMemory = false },
        });
        var seen = new List<ShrinkControl>();
        long Shrink(ShrinkControl control)
        {
            seen.Add(control);
            return 0;
        }
        system.Pages.RegisterShrinker(Shrink);
        var taken = new List<nint>();
        try
        {
            while (true)
            {
                PageFrame* p = system.Pages.AllocPages(Gfp.NoFs | Gfp.NoWarn, 0);
                if (p == null) break;
                taken.Add((nint)p);
            }
            PageFrame* big = system.Pages.AllocPages(Gfp.NoIo | Gfp.NoWarn, 9);
            Assert.True(big == null);
        }
        finally
        {
            system.Pages.UnregisterShrinker(Shrink);
            foreach (nint p in taken) system.Pages.FreePages((PageFrame*)p, 0);
        }
        Assert.Contains(seen, c => c.Gfp == (Gfp.NoFs | Gfp.NoWarn) && c.Node == 0 && c.NrToScan == 128);
        Assert.Contains(seen, c => c.Gfp == (Gfp.NoIo | Gfp.NoWarn) && c.NrToScan == 512);
    }
}
