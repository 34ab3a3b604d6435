using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>
/// ftruncate(2) and end-of-file semantics through the cache: bytes cut off by a truncation read as zeros when the
/// file grows again (cached or not), reads at or past the end return nothing, and a write past the end leaves a hole
/// of zeros on disk.
/// </summary>
public sealed class PageCacheTruncateTests() : PageCacheTestBase()
{
    private static byte[] Filled(int length, byte value)
    {
        var data = new byte[length];
        Array.Fill(data, value);
        return data;
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void TheTailCutOffByTruncateReadsAsZerosAfterTheFileGrowsAgain(bool fsyncFirst, bool dropBetween)
    {
        string path = Path.Combine(_dir, "tail.bin");
        using FileMapping file = _system.PageCache.Open(path);
        file.Write(0, Filled(3 * 4096, 0xAA));
        if (fsyncFirst) file.Fsync();

        file.Truncate(4096 + 100);
        if (dropBetween)
        {
            file.Fsync();
            _system.PageCache.DropCaches();
            Assert.Equal(0, file.CachedPages);
        }
        file.Truncate(3 * 4096);
        Assert.Equal(3 * 4096, file.Length);

        var expected = new byte[3 * 4096];
        Array.Fill(expected, (byte)0xAA, 0, 4096 + 100);
        var back = new byte[3 * 4096];
        Assert.Equal(back.Length, file.Read(0, back));
        Assert.Equal(expected, back);
        file.Fsync();
        Assert.Equal(expected, File.ReadAllBytes(path));
        _system.PageCache.CheckConsistency();
    }

    [Fact]
    public void ReadsAtOrPastTheEndReturnNothingAndReadsAcrossItAreShort()
    {
        string path = Path.Combine(_dir, "eof.bin");
        using FileMapping file = _system.PageCache.Open(path);
        var buffer = new byte[8192];
        Assert.Equal(0, file.Read(0, buffer)); // empty file
        file.Write(0, Filled(5000, 0x11));
        Assert.Equal(0, file.Read(5000, buffer));
        Assert.Equal(0, file.Read(5001, buffer));
        Assert.Equal(0, file.Read(1L << 40, buffer));
        Assert.Equal(10, file.Read(4990, buffer));
        Assert.Equal(Filled(10, 0x11), buffer[..10]);
        Assert.Equal(2, file.CachedPages); // nothing was cached past the end
        file.Truncate(4096);
        Assert.Equal(0, file.Read(4096, buffer));
        Assert.Equal(1, file.CachedPages);
        _system.PageCache.CheckConsistency();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AWritePastTheEndLeavesAHoleOfZerosOnDisk(bool oldEndCached)
    {
        string path = Path.Combine(_dir, "hole.bin");
        // Old end of file inside page 0, with bytes past it on disk that a truncation cut off.
        File.WriteAllBytes(path, Filled(4096, 0xEE));
        using FileMapping file = _system.PageCache.Open(path);
        file.Truncate(100);
        if (oldEndCached) Assert.Equal(100, file.Read(0, new byte[4096]));
        else Assert.Equal(0, file.CachedPages);

        byte[] data = Filled(300, 0x55);
        file.Write(5 * 4096 + 7, data);
        file.Write(150, Filled(10, 0x66)); // inside the old end page, past the old end
        // Only the pages written are cached: the hole between them is neither read nor created.
        Assert.Equal(2, file.CachedPages);
        file.Fsync();

        var expected = new byte[5 * 4096 + 7 + data.Length];
        Array.Fill(expected, (byte)0xEE, 0, 100);
        Array.Fill(expected, (byte)0x66, 150, 10);
        data.CopyTo(expected, 5 * 4096 + 7);
        Assert.Equal(expected, File.ReadAllBytes(path));
        var back = new byte[expected.Length];
        Assert.Equal(expected.Length, file.Read(0, back));
        Assert.Equal(expected, back);
        _system.PageCache.CheckConsistency();
    }

    [Fact]
    public void SparseWritesTerabytesApartAreCachedWrittenAndFreed()
    {
        string path = Path.Combine(_dir, "sparse.bin");
        using FileMapping file = _system.PageCache.Open(path);
        long[] offsets = [0, 3L << 30, (1L << 40) + 5];
        for (int i = 0; i < offsets.Length; i++) file.Write(offsets[i], Filled(10, (byte)(i + 1)));
        Assert.Equal(3, file.CachedPages);
        Assert.Equal(3, _system.PageCache.Statistics.DirtyPages);
        file.Fsync(); // the dirty tags lead writeback to the three pages through a tree five levels deep
        Assert.Equal(0, _system.PageCache.Statistics.DirtyPages);
        Assert.Equal((1L << 40) + 15, new FileInfo(path).Length);
        using (var disk = File.OpenHandle(path))
        {
            var buffer = new byte[16];
            for (int i = 0; i < offsets.Length; i++)
            {
                Assert.Equal(10, RandomAccess.Read(disk, buffer.AsSpan(0, 10), offsets[i]));
                Assert.Equal(Filled(10, (byte)(i + 1)), buffer[..10]);
            }
            Assert.Equal(16, RandomAccess.Read(disk, buffer, 1L << 30)); // the hole between
            Assert.Equal(new byte[16], buffer);
        }
        file.Truncate(4096);
        Assert.Equal(1, file.CachedPages);
        file.Truncate(0);
        Assert.Equal(0, _system.PageCache.Statistics.FilePages);
        _system.PageCache.CheckConsistency();
    }

    [Fact]
    public void AReadOnlyFileRefusesWritesAndTruncationAndFsyncsCleanly()
    {
        string path = Path.Combine(_dir, "ro.bin");
        File.WriteAllBytes(path, Filled(5000, 0x42));
        using FileMapping file = _system.PageCache.Open(path, FileMode.Open, FileAccess.Read);
        Assert.False(file.CanWrite);
        Assert.Throws<NotSupportedException>(() => file.Write(0, Filled(1, 1)));
        Assert.Throws<NotSupportedException>(() => file.Truncate(0));
        var back = new byte[5000];
        Assert.Equal(5000, file.Read(0, back));
        Assert.Equal(Filled(5000, 0x42), back);
        file.Fsync();
        Assert.Equal(0, _system.PageCache.Statistics.DirtyPages);
        Assert.Equal(Filled(5000, 0x42), File.ReadAllBytes(path));
    }
}
