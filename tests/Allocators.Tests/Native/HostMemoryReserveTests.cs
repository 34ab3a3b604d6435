using Allocators.Native;

namespace Allocators.Tests.Native;

public sealed unsafe class HostMemoryReserveTests
{
    [Theory]
    [InlineData(4096UL, 4096UL)]
    [InlineData(64UL * 1024, 64UL * 1024)]
    [InlineData(3UL * 1024 * 1024, 2UL * 1024 * 1024)]
    [InlineData(1UL << 30, 1UL << 30)]
    public void ReserveReturnsAlignedAddressSpace(ulong size, ulong alignment)
    {
        void* p = HostMemory.Reserve((nuint)size, (nuint)alignment);
        try
        {
            Assert.Equal(0UL, (ulong)p % alignment);
        }
        finally
        {
            HostMemory.Release(p, (nuint)size);
        }
    }

    [Fact]
    public void CommittedPartOfReservationIsWritableAndZeroed()
    {
        const nuint size = 8 * 1024 * 1024;
        const nuint chunk = 2 * 1024 * 1024;
        byte* p = (byte*)HostMemory.Reserve(size, chunk);
        try
        {
            HostMemory.MapAnonymousFixed(p + chunk, chunk);
            var span = new Span<byte>(p + chunk, (int)chunk);
            Assert.True(span.IndexOfAnyExcept((byte)0) < 0);
            span.Fill(1);

            HostMemory.Protect(p + chunk, chunk, Libc.ProtRead);
            Assert.Equal(1, p[chunk + chunk - 1]);
            HostMemory.Protect(p + chunk, chunk, Libc.ProtRead | Libc.ProtWrite);
            p[chunk] = 2;
            Assert.Equal(2, p[chunk]);
        }
        finally
        {
            HostMemory.Release(p, size);
        }
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(2048UL)]
    [InlineData(3UL * 4096)]
    public void ReserveRejectsBadAlignment(ulong alignment)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => { HostMemory.Reserve(4096, (nuint)alignment); });
    }

    [Fact]
    public void ReleaseRejectsUnalignedAddress()
    {
        Assert.Throws<ArgumentException>(() => HostMemory.Release((void*)0x1001, 4096));
    }

    [Fact]
    public void FailuresCarryErrnoNameAndArguments()
    {
        var ex = Assert.Throws<HostMemoryException>(() => HostMemory.CloseFd(-1));
        Assert.Equal(9, ex.Errno);
        Assert.Equal("EBADF", ex.ErrnoName);
        Assert.Equal("close", ex.Operation);
        Assert.Contains("close(-1)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("errno 9 (EBADF", ex.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<IOException>(ex);
    }
}
