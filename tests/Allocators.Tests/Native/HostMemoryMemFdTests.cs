using Allocators.Native;

namespace Allocators.Tests.Native;

public sealed unsafe class HostMemoryMemFdTests
{
    private const nuint Page = 4096;

    [Fact]
    public void MemFdMappedTwiceShowsTheSameBytes()
    {
        const nuint length = 4 * Page;
        int fd = HostMemory.CreateMemFd("allocators-test-alias", (long)length);
        byte* area = (byte*)HostMemory.Reserve(2 * length, Page);
        try
        {
            byte* first = area;
            byte* second = area + length;
            HostMemory.MapSharedFixed(first, length, fd, 0);
            HostMemory.MapSharedFixed(second, length, fd, 0, writable: false);

            for (nuint i = 0; i < length; i += 512)
            {
                first[i] = (byte)(i / 512 + 1);
            }

            for (nuint i = 0; i < length; i += 512)
            {
                Assert.Equal((byte)(i / 512 + 1), second[i]);
            }
        }
        finally
        {
            HostMemory.Release(area, 2 * length);
            HostMemory.CloseFd(fd);
        }
    }

    [Fact]
    public void MappingAtAnOffsetSeesThatPartOfTheFile()
    {
        int fd = HostMemory.CreateMemFd("allocators-test-offset", 0);
        byte* area = (byte*)HostMemory.Reserve(4 * Page, Page);
        try
        {
            HostMemory.ResizeMemFd(fd, (long)(4 * Page));
            HostMemory.MapSharedFixed(area, 4 * Page, fd, 0);
            HostMemory.MapSharedFixed(area + 3 * Page, Page, fd, (long)Page);
            area[Page + 10] = 99;
            Assert.Equal(99, area[3 * Page + 10]);
        }
        finally
        {
            HostMemory.Release(area, 4 * Page);
            HostMemory.CloseFd(fd);
        }
    }

    [Fact]
    public void PunchHoleZeroesPagesInEveryMapping()
    {
        const nuint length = 4 * Page;
        int fd = HostMemory.CreateMemFd("allocators-test-punch", (long)length);
        byte* area = (byte*)HostMemory.Reserve(2 * length, Page);
        try
        {
            byte* first = area;
            byte* second = area + length;
            HostMemory.MapSharedFixed(first, length, fd, 0);
            HostMemory.MapSharedFixed(second, length, fd, 0);
            new Span<byte>(first, (int)length).Fill(0x5A);

            HostMemory.PunchHole(fd, (long)Page, (long)(2 * Page));

            Assert.Equal(0x5A, first[Page - 1]);
            Assert.True(new Span<byte>(first + Page, (int)(2 * Page)).IndexOfAnyExcept((byte)0) < 0);
            Assert.True(new Span<byte>(second + Page, (int)(2 * Page)).IndexOfAnyExcept((byte)0) < 0);
            Assert.Equal(0x5A, second[3 * Page]);
        }
        finally
        {
            HostMemory.Release(area, 2 * length);
            HostMemory.CloseFd(fd);
        }
    }

    [Fact]
    public void DiscardZeroesAnonymousPages()
    {
        const nuint length = 4 * Page;
        byte* p = (byte*)HostMemory.Reserve(length, Page);
        try
        {
            HostMemory.MapAnonymousFixed(p, length);
            new Span<byte>(p, (int)length).Fill(0xEE);

            HostMemory.Discard(p + Page, 2 * Page);

            Assert.Equal(0xEE, p[Page - 1]);
            Assert.True(new Span<byte>(p + Page, (int)(2 * Page)).IndexOfAnyExcept((byte)0) < 0);
            Assert.Equal(0xEE, p[3 * Page]);
        }
        finally
        {
            HostMemory.Release(p, length);
        }
    }

    [Fact]
    public void MapSharedFixedOnABadFdThrowsWithErrno()
    {
        byte* area = (byte*)HostMemory.Reserve(Page, Page);
        try
        {
            var ex = Assert.Throws<HostMemoryException>(() => HostMemory.MapSharedFixed(area, Page, -1, 0));
            Assert.Equal("EBADF", ex.ErrnoName);
            Assert.Contains("MAP_SHARED|MAP_FIXED", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            HostMemory.Release(area, Page);
        }
    }
}
