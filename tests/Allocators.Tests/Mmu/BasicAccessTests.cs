using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public unsafe class BasicAccessTests
{
    [Fact]
    public void MmapWriteReadMunmapFreesEverything()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 10 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            Assert.True(a >= VirtualAddress.MmapMinAddr);
            Assert.Equal(0UL, a & 0xFFF);
            for (int i = 0; i < 10; i++) mm.Write<long>(a + (ulong)i * 4096 + 8, i * 1000 + 7);
            for (int i = 0; i < 10; i++) Assert.Equal(i * 1000 + 7, mm.Read<long>(a + (ulong)i * 4096 + 8));
            var s = mm.Statistics;
            Assert.Equal(10, s.RssAnon);
            Assert.Equal(10, s.MinorFaults);
            mm.Munmap(a, 10 * 4096);
            Assert.Equal(0, mm.Statistics.RssAnon);
            Assert.Throws<SegmentationFaultException>(() => mm.Read<long>(a));
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void CrossPageBytesAndValues()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0, 3 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            mm.Write<ulong>(a + 4096 - 3, 0x1122334455667788UL);
            Assert.Equal(0x1122334455667788UL, mm.Read<ulong>(a + 4096 - 3));
            var data = new byte[6000];
            new Random(1).NextBytes(data);
            mm.WriteBytes(a + 100, data);
            var back = new byte[6000];
            mm.ReadBytes(a + 100, back);
            Assert.Equal(data, back);
            mm.Memset(a + 4000, 0xAB, 200);
            Assert.Equal(0xAB, mm.Read<byte>(a + 4000));
            Assert.Equal(0xAB, mm.Read<byte>(a + 4199));
            var span = mm.GetSpan(a + 8192, 16, write: true);
            span.Fill(7);
            Assert.Equal(7, mm.Read<byte>(a + 8192 + 15));
            Assert.Throws<ArgumentException>(() => mm.GetSpan(a + 4090, 16, write: false));
        }
        f.AssertAllFreed();
    }
}

public class MmuDemoTests
{
    [Fact]
    public void DemoRunsAndLeavesNothingBehind()
    {
        using var f = new MmuFixture(128L << 20);
        var text = new StringWriter();
        Allocators.Cli.Commands.MmuDemo.Run(f.System, text);
        string output = text.ToString();
        Assert.Contains("(0 mismatches)", output);
        Assert.Contains("pgfault ", output);
        Assert.Contains("[stack]", output);
        f.AssertAllFreed();
    }
}
