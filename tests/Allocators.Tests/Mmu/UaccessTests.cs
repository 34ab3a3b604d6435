using Allocators.Mmu;

namespace Allocators.Tests.Mmu;

public class UaccessTests
{
    [Fact]
    public void CopyToAndFromUserReturnBytesNotCopied()
    {
        using var f = new MmuFixture();
        using (var mm = f.NewProcess())
        {
            ulong a = mm.Mmap(0x2000_0000, 2 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
            var data = Enumerable.Range(0, 3 * 4096).Select(i => (byte)i).ToArray();
            // Two pages mapped, the third not: 4096 bytes are left over.
            Assert.Equal(4096, mm.CopyToUser(a, data));
            var back = new byte[3 * 4096];
            Assert.Equal(4096, mm.CopyFromUser(back, a));
            Assert.Equal(data.AsSpan(0, 8192).ToArray(), back.AsSpan(0, 8192).ToArray());
            Assert.Equal(0, mm.CopyFromUser(back.AsSpan(0, 100), a + 8000));
            // Starting 100 bytes before the hole.
            Assert.Equal(50, mm.CopyToUser(a + 8192 - 100, data.AsSpan(0, 150)));
            // Kernel addresses and overflows fail access_ok: nothing copied.
            Assert.Equal(10, mm.CopyToUser(VirtualAddress.VmallocStart, data.AsSpan(0, 10)));
            Assert.Equal(10, mm.CopyFromUser(back.AsSpan(0, 10), VirtualAddress.TaskSize - 5));
            // Read-only memory: copy_to_user fails, copy_from_user works.
            mm.Mprotect(a, 4096, MemoryProtection.Read);
            Assert.Equal(16, mm.CopyToUser(a, data.AsSpan(0, 16)));
            Assert.Equal(0, mm.CopyFromUser(back.AsSpan(0, 16), a));
            Assert.Equal(0, mm.ClearUser(a + 4096, 4096));
            Assert.Equal(0, mm.Read<long>(a + 4096));
            // No SIGSEGV was raised by any of these.
            Assert.Equal(0, f.Kernel.Statistics.SegmentationFaults);
        }
        f.AssertAllFreed();
    }

    [Fact]
    public void MemcpyBetweenAddressSpaces()
    {
        using var f = new MmuFixture();
        using (var a = f.NewProcess("a"))
        using (var b = f.NewProcess("b"))
        {
            ulong src = a.Mmap(0, 5 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            ulong dst = b.Mmap(0, 5 * 4096, MemoryProtection.ReadWrite, MapFlags.Private | MapFlags.Anonymous);
            var data = new byte[5 * 4096 - 300];
            new Random(5).NextBytes(data);
            a.WriteBytes(src + 100, data);
            VirtualAddressSpace.Memcpy(b, dst + 200, a, src + 100, data.Length);
            var back = new byte[data.Length];
            b.ReadBytes(dst + 200, back);
            Assert.Equal(data, back);
            Assert.Throws<SegmentationFaultException>(() => VirtualAddressSpace.Memcpy(b, dst + 4 * 4096, a, src, 2 * 4096));
        }
        f.AssertAllFreed();
    }
}
