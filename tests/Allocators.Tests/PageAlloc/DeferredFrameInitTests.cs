using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// Deferred struct page init: a max-order block's tail frames are written when the block first leaves its free list,
/// so the frames of memory nobody has used stay untouched host memory; every frame handed out carries its pfn and
/// zone, and conversions and misuse reports give real pfns for frames never written.
/// </summary>
public sealed unsafe partial class DeferredFrameInitTests
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial int mincore(void* addr, nuint length, byte* vec);

    /// <summary>Host pages of [start, start + bytes) that are resident.</summary>
    private static long ResidentPages(void* start, nuint bytes)
    {
        nuint page = (nuint)Environment.SystemPageSize;
        nuint first = (nuint)start & ~(page - 1);
        nuint count = ((nuint)start + bytes - first + page - 1) / page;
        byte[] vec = new byte[count];
        fixed (byte* v = vec)
            Assert.Equal(0, mincore((void*)first, count * page, v));
        return vec.Count(b => (b & 1) != 0);
    }

    [Fact]
    public void TheFramesOfMemoryNobodyUsedAreNeverResident()
    {
        using MemorySystem sys = NewSystem(256);
        (nint memMap, nuint bytes) = sys.Memory.FlatMemMap;
        var pages = new List<nint>();
        for (int i = 0; i < 100; i++) pages.Add((nint)sys.Pages.AllocPages(Gfp.Kernel, 0));
        long resident = ResidentPages((void*)memMap, bytes);
        // 4 MiB of frames: one host page per max-order block for its head (64), and the blocks in use.
        Assert.True(resident < 128, $"{resident} of {bytes / 4096} host pages of the frame array are resident");
        foreach (nint p in pages) sys.Pages.FreePages((PageFrame*)p, 0);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EveryFrameHandedOutCarriesItsPfnAndZone(bool sparse)
    {
        using MemorySystem sys = sparse ? NewSparseSystem(16, 8, 32, autoGrow: false) : NewSystem(16);
        PageAllocator pa = sys.Pages;
        FreeListState before = Snapshot(pa);
        ulong maxPfn = sys.Memory.MaxPfn;
        for (ulong pfn = 0; pfn < maxPfn; pfn += 97)
        {
            PageFrame* frame = sys.Memory.PfnToPage(pfn);
            if (frame == null) continue;
            Assert.Equal(pfn, sys.Memory.PageToPfn(frame));
            Assert.Equal((nint)sys.Memory.PfnToVirt(pfn), (nint)sys.Memory.PageAddress(frame));
        }
        List<nint> pages = AllocateUntilFailure(pa, Gfp.Kernel | Gfp.NoWarn);
        Assert.NotEmpty(pages);
        int zoneId = ((PageFrame*)pages[0])->ZoneId;
        foreach (nint p in pages)
        {
            var page = (PageFrame*)p;
            Assert.Equal(sys.Memory.PageToPfn(page), page->Pfn);
            Assert.Equal(zoneId, page->ZoneId);
            Assert.Equal((nint)sys.Memory.PageAddress(page), (nint)pa.AddressOf(page));
        }
        foreach (nint p in pages) pa.FreePages((PageFrame*)p, 0);
        pa.DrainAllPages();
        pa.CheckConsistency();
        FreeListState after = Snapshot(pa);
        Assert.Equal(before.Blocks, after.Blocks);
        Assert.Equal(before.NrFreePages, after.NrFreePages);
    }

    [Fact]
    public void AMisuseReportOnANeverWrittenFrameNamesItsPfn()
    {
        using MemorySystem sys = NewSystem(16);
        ulong pfn = sys.Memory.MaxPfn - 3; // inside the last block, which nothing has used
        PageFrame* frame = sys.Memory.PfnToPage(pfn);
        FreeListState before = Snapshot(sys.Pages);
        var e = Assert.ThrowsAny<Allocators.Common.BadPageException>(() => sys.Pages.FreePages(frame, 0));
        Assert.Contains($"pfn 0x{pfn:x}", e.Message);
        e = Assert.ThrowsAny<Allocators.Common.BadPageException>(() => sys.Pages.GetPage(frame));
        Assert.Contains($"pfn 0x{pfn:x}", e.Message);
        AssertSameState(before, Snapshot(sys.Pages));
        sys.Pages.CheckConsistency();
    }
}
