using Allocators.Mmu;
using Allocators.Physical;

namespace Allocators.Tests.Highmem;

/// <summary>What works without the split works with it: user memory, fork and copy-on-write, vmalloc, uaccess.</summary>
public sealed unsafe class HighmemSystemTests : IDisposable
{
    private const long MiB = 1L << 20;
    private const MemoryProtection ReadWrite = MemoryProtection.Read | MemoryProtection.Write;
    private readonly MemorySystem _sys = new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64 * MiB, LowMemoryLimit = 32 * MiB } });

    public void Dispose() => _sys.Dispose();

    [Fact]
    public void ForkAndCopyOnWriteWorkOnHighPages()
    {
        using var parent = _sys.CreateAddressSpace();
        ulong va = parent.Mmap(0, 64 * 4096, ReadWrite, MapFlags.Private | MapFlags.Anonymous);
        for (int i = 0; i < 64; i++) parent.Write(va + (ulong)i * 4096, (long)i);
        Assert.True(_sys.Kernel.IsHighMem(_sys.Memory.PfnToPage(parent.GetPte(va).Pfn)));
        using var child = parent.Fork();
        for (int i = 0; i < 64; i += 2) child.Write(va + (ulong)i * 4096, -i - 1L);
        for (int i = 0; i < 64; i++)
        {
            Assert.Equal((long)i, parent.Read<long>(va + (ulong)i * 4096));
            Assert.Equal(i % 2 == 0 ? -i - 1L : i, child.Read<long>(va + (ulong)i * 4096));
        }
        var buffer = new byte[8];
        Assert.Equal(0L, child.CopyFromUser(buffer, va + 4096));
        Assert.Equal(1L, BitConverter.ToInt64(buffer));
    }

    [Fact]
    public void VmallocUsesHighPagesAndReadsThemBack()
    {
        ulong v = _sys.Vmalloc.Vzalloc(1 << 20);
        bool anyHigh = false;
        for (ulong off = 0; off < 1 << 20; off += 4096)
        {
            _sys.Kernel.Write(v + off, (long)off);
            anyHigh |= _sys.Kernel.IsHighMem(_sys.Kernel.TranslateToPage(v + off));
        }
        Assert.True(anyHigh);
        for (ulong off = 0; off < 1 << 20; off += 4096) Assert.Equal((long)off, _sys.Kernel.Read<long>(v + off));
        _sys.Vmalloc.Vfree(v);
    }

    [Fact]
    public void TheLayoutShowsEveryKernelArea()
    {
        string layout = _sys.Kernel.DumpLayout();
        Assert.Contains("fixmap  : 0xffffffffff", layout);
        Assert.Contains($"pkmap   : 0x{KernelAddressSpace.PkmapBase:x16}", layout);
        Assert.Contains("vmalloc : 0xffffc90000000000", layout);
        Assert.Contains("lowmem  : 0xffff888000000000 - 0xffff888002000000   (  32 MB)", layout);
    }

    [Fact]
    public void MeminfoSplitsLowAndHighMemory()
    {
        var items = _sys.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);
        Assert.Equal(32L * 1024, items["HighTotal"]);
        Assert.Equal(items["MemTotal"] - items["HighTotal"], items["LowTotal"]);
        Assert.Equal(items["MemFree"], items["HighFree"] + items["LowFree"]);
        PageFrame* high = _sys.Pages.AllocPages(Allocators.PageAlloc.Gfp.HighUser, 0);
        var after = _sys.MeminfoItems().ToDictionary(i => i.Name, i => i.Kb);
        Assert.True(after["HighFree"] < items["HighFree"]);
        _sys.Pages.FreePages(high, 0);
        using var plain = new MemorySystem(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 32 * MiB, LowMemoryLimit = PhysicalMemoryOptions.AllMemoryLow } });
        Assert.DoesNotContain(plain.MeminfoItems(), i => i.Name == "HighTotal");
    }
}
