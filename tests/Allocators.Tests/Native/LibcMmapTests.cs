using System.Runtime.InteropServices;
using Allocators.Native;

namespace Allocators.Tests.Native;

public sealed unsafe class LibcMmapTests
{
    [Fact]
    public void MmapWriteReadMunmapRoundTrip()
    {
        const nuint length = 4 * 4096;
        void* p = Libc.Mmap(null, length, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        Assert.True(p != Libc.MapFailed, $"mmap failed: errno {Marshal.GetLastPInvokeError()}");
        Assert.Equal((nuint)0, (nuint)p % 4096);

        var span = new Span<byte>(p, (int)length);
        Assert.True(span.IndexOfAnyExcept((byte)0) < 0, "fresh anonymous memory must be zero");
        span.Fill(0xA5);
        Assert.Equal(0xA5, span[(int)length - 1]);

        Assert.Equal(0, Libc.Munmap(p, length));
    }

    [Fact]
    public void MprotectAndMadviseSucceedOnAMapping()
    {
        const nuint length = 2 * 4096;
        void* p = Libc.Mmap(null, length, Libc.ProtNone, Libc.MapPrivate | Libc.MapAnonymous | Libc.MapNoReserve, -1, 0);
        Assert.True(p != Libc.MapFailed);
        try
        {
            Assert.Equal(0, Libc.Mprotect(p, length, Libc.ProtRead | Libc.ProtWrite));
            *(long*)p = 42;
            Assert.Equal(0, Libc.Madvise(p, length, Libc.MadvDontNeed));
            Assert.Equal(0, *(long*)p);
        }
        finally
        {
            Assert.Equal(0, Libc.Munmap(p, length));
        }
    }

    [Fact]
    public void FailedMmapReturnsMapFailedAndSetsErrno()
    {
        // A zero length is always EINVAL.
        void* p = Libc.Mmap(null, 0, Libc.ProtRead, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        Assert.True(p == Libc.MapFailed);
        Assert.Equal(22, Marshal.GetLastPInvokeError());
    }

    [Fact]
    public void PageSizeAndHeapWork()
    {
        Assert.Equal(Environment.SystemPageSize, Libc.SysconfPageSize());
        Assert.Equal((nuint)Environment.SystemPageSize, HostMemory.PageSize);

        byte* block = (byte*)Libc.Malloc(100);
        Assert.True(block != null);
        block[99] = 7;
        Libc.Free(block);
        Libc.Free(null);
        Assert.True(Libc.IsLinux);
    }
}
