using Allocators.Native;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>The memfd-backed arena (Linux): pages are real shared file pages, and free page reporting punches holes.</summary>
public sealed unsafe class MemFdArenaTests
{
    /// <summary>Maps the whole memfd a second time, read-only, to look at the file's own view of the bytes.</summary>
    private sealed class SecondView : IDisposable
    {
        private readonly nuint _length;
        public SecondView(int fd, long length)
        {
            _length = (nuint)length;
            Base = (byte*)Libc.Mmap(null, _length, Libc.ProtRead, Libc.MapShared, fd, 0);
            Assert.True(Base != Libc.MapFailed, "mmap of the arena memfd failed");
        }

        public byte* Base { get; }

        public void Dispose() => Libc.Munmap(Base, _length);
    }

    [Fact]
    public void PagesAreBackedByTheMemFd()
    {
        Assert.True(OperatingSystem.IsLinux(), "the memfd arena needs Linux; CI runs on Linux");
        using var sys = NewSystem(16, backing: ArenaBacking.MemFd);
        PageAllocator pa = sys.Pages;
        Assert.True(sys.Memory.MemFd >= 0);
        Assert.True(sys.Memory.ContiguousBase != null);
        using var view = new SecondView(sys.Memory.MemFd, 16 * MiB);

        var blocks = new List<(nint Page, int Order)>();
        for (int i = 0; i < 40; i++)
        {
            int order = i % 5;
            PageFrame* page = pa.AllocPages(Gfp.Kernel, order);
            Assert.True(pa.PageAddress(page) == sys.Memory.ContiguousBase + ((long)page->Pfn << 12));
            new Span<byte>(pa.PageAddress(page), 4096 << order).Fill((byte)(i + 1));
            blocks.Add(((nint)page, order));
        }
        for (int i = 0; i < blocks.Count; i++)
        {
            var (page, order) = blocks[i];
            var p = (PageFrame*)page;
            var direct = new ReadOnlySpan<byte>(pa.PageAddress(p), 4096 << order);
            var file = new ReadOnlySpan<byte>(view.Base + ((long)p->Pfn << 12), 4096 << order);
            Assert.True(direct.IndexOfAnyExcept((byte)(i + 1)) < 0, $"block {i} lost its bytes");
            Assert.True(file.SequenceEqual(direct), $"block {i}: the memfd does not hold what was written");
            Assert.True(pa.VirtToPage(pa.PageAddress(p) + 123) == p);
        }
        foreach (var (page, order) in blocks) pa.FreePages((PageFrame*)page, order);
        pa.DrainAllPages();
        Assert.Equal(pa.ManagedPages, pa.NrFreePages);
    }

    [Fact]
    public void ReleaseFreeMemoryPunchesHolesInFreeBlocksOnly()
    {
        Assert.True(OperatingSystem.IsLinux(), "the memfd arena needs Linux; CI runs on Linux");
        using var sys = NewSystem(16, backing: ArenaBacking.MemFd, releaseFreeMemory: false);
        PageAllocator pa = sys.Pages;
        using var view = new SecondView(sys.Memory.MemFd, 16 * MiB);
        Zone normal = pa.GetZone(0, ZoneType.Normal);

        // Touch every block, keep one live.
        var blocks = new List<nint>();
        PageFrame* b;
        while ((b = pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn, 10)) != null)
        {
            new Span<byte>(pa.PageAddress(b), 4 << 20).Fill(0x5A);
            blocks.Add((nint)b);
        }
        Assert.Equal(4, blocks.Count);
        var live = (PageFrame*)blocks[0];
        foreach (nint f in blocks.Skip(1)) pa.FreePages((PageFrame*)f, 10);
        Assert.Equal(0, pa.ReportedPages);

        long released = pa.ReleaseFreeMemory();
        // Blocks go while the resident free pages stay at least one block above the high watermark.
        long expected = 0;
        for (long resident = 3 * 1024; resident - normal.WatermarkHigh >= 1024; resident -= 1024) expected += 1024;
        Assert.Equal(expected, released);
        Assert.True(released > 0);
        Assert.Equal(released, pa.PagesReleasedToHost);
        Assert.Equal(released, pa.ReportedPages);
        Assert.Equal(released, normal.ReportedPages);

        // The live block is untouched, in the direct map and in the file.
        Assert.True(new ReadOnlySpan<byte>(pa.PageAddress(live), 4 << 20).IndexOfAnyExcept((byte)0x5A) < 0);
        Assert.True(new ReadOnlySpan<byte>(view.Base + ((long)live->Pfn << 12), 4 << 20).IndexOfAnyExcept((byte)0x5A) < 0);

        // Reported free blocks read zero through both mappings; the others still hold the old bytes.
        int reportedBlocks = 0;
        foreach (nint f in blocks.Skip(1))
        {
            var page = (PageFrame*)f;
            Assert.True(page->Has(PageFlags.Buddy));
            bool zero = IsZero(pa, page, 10);
            bool fileZero = new ReadOnlySpan<byte>(view.Base + ((long)page->Pfn << 12), 4 << 20).IndexOfAnyExcept((byte)0) < 0;
            Assert.Equal(page->Has(PageFlags.Reported), zero);
            Assert.Equal(zero, fileZero);
            if (zero) reportedBlocks++;
        }
        Assert.Equal(released / 1024, reportedBlocks);

        // A second call finds nothing new to release.
        Assert.Equal(0, pa.ReleaseFreeMemory());

        // Released memory is reusable: allocate it again, write and read back.
        var again = new List<nint>();
        while ((b = pa.AllocPages(Gfp.Kernel | Gfp.MemAlloc | Gfp.NoWarn, 10)) != null)
        {
            new Span<byte>(pa.PageAddress(b), 4 << 20).Fill(0xC3);
            again.Add((nint)b);
        }
        Assert.Equal(3, again.Count);
        Assert.Equal(0, pa.ReportedPages);
        foreach (nint a in again)
        {
            var page = (PageFrame*)a;
            Assert.True(new ReadOnlySpan<byte>(view.Base + ((long)page->Pfn << 12), 4 << 20).IndexOfAnyExcept((byte)0xC3) < 0);
            pa.FreePages(page, 10);
        }
        pa.FreePages(live, 10);
    }

    [Fact]
    public void SparseMemFdSectionsComeAndGo()
    {
        Assert.True(OperatingSystem.IsLinux(), "the memfd arena needs Linux; CI runs on Linux");
        using var sys = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions
            {
                Size = 8 * MiB, Model = MemoryModel.Sparse, SectionSize = 4 * MiB, MaxSize = 16 * MiB,
                Backing = ArenaBacking.MemFd,
                // Hot-added memory is high memory with a split, and these kernel allocations must reach it.
                LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow,
            },
        });
        PageAllocator pa = sys.Pages;
        using var view = new SecondView(sys.Memory.MemFd, 16 * MiB);
        Assert.Equal(2, pa.AddMemory());
        byte* block = null;
        var held = new List<nint>();
        for (int i = 0; i < 3; i++)
        {
            byte* b = pa.GetFreePages(Gfp.Kernel | Gfp.MemAlloc, 10);
            held.Add((nint)b);
            if (sys.Memory.PfnToSection(pa.VirtToPage(b)->Pfn) == 2) block = b;
        }
        Assert.True(block != null);
        new Span<byte>(block, 4 << 20).Fill(0x77);
        Assert.Equal(0x77, view.Base[8 * MiB + 100]);
        foreach (nint h in held) pa.FreePages((void*)h, 10);

        pa.RemoveMemory(2);
        Assert.Equal(0, view.Base[8 * MiB + 100]);   // the section's file range was punched out
        Assert.Equal(2, pa.AddMemory());
        byte* again = pa.GetFreePages(Gfp.Kernel | Gfp.Zero | Gfp.MemAlloc, 10);
        Assert.True(again != null);
        pa.FreePages(again, 10);
    }
}
