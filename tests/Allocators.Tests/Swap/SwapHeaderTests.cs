using System.Buffers.Binary;
using System.Text;
using Allocators.Swap;

namespace Allocators.Tests.Swap;

/// <summary>mkswap's v1 header and the checks swapon makes on it (read_swap_header) and on the file (no holes).</summary>
public sealed class SwapHeaderTests : SwapTestBase
{
    [Fact]
    public void MkswapWritesAV1HeaderAndAllocatesTheFile()
    {
        string path = Mkswap("swap", 300);
        byte[] file = File.ReadAllBytes(path);
        Assert.Equal(300 * PageSize, file.Length);
        Assert.All(file.AsSpan(0, 1024).ToArray(), b => Assert.Equal(0, b));             // bootbits
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(1024)));     // version
        Assert.Equal(299u, BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(1028)));   // last_page
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(1032)));     // nr_badpages
        Assert.NotEqual(Guid.Empty, new Guid(file.AsSpan(1036, 16)));                      // uuid
        Assert.Equal("SWAPSPACE2", Encoding.ASCII.GetString(file, PageSize - 10, 10));

        SwapDevice device = _table.Swapon(path);
        Assert.Equal(299, device.Pages);
        Assert.Equal(0, device.UsedPages);
        Assert.True(device.WriteOk);
        device.CheckConsistency();
    }

    [Fact]
    public void MkswapRefusesAreaBelowTenPages()
        => Assert.Throws<ArgumentOutOfRangeException>(() => SwapDevice.Mkswap(Path.Combine(_dir, "tiny"), 9 * PageSize));

    [Theory]
    [InlineData("magic", "Unable to find swap-space signature")]
    [InlineData("version", "Unable to handle swap header version 2")]
    [InlineData("empty", "Empty swap-file")]
    [InlineData("short", "Swap area shorter than signature indicates")]
    [InlineData("badpages", "nr_badpages 1")]
    public void SwaponRejectsABadHeader(string damage, string message)
    {
        string path = Mkswap("swap", 20);
        using (var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            (long at, byte[] bytes) = damage switch
            {
                "magic" => (PageSize - 10L, "SWAP-SPACE"u8.ToArray()),
                "version" => (1024L, BitConverter.GetBytes(2u)),
                "empty" => (1028L, BitConverter.GetBytes(0u)),
                "short" => (1028L, BitConverter.GetBytes(20u)),
                _ => (1032L, BitConverter.GetBytes(1u)),
            };
            file.Position = at;
            file.Write(bytes);
        }
        var e = Assert.Throws<InvalidDataException>(() => _table.Swapon(path));
        Assert.Contains(message, e.Message);
        Assert.Contains(path, e.Message);
        Assert.Empty(_table.Devices);
    }

    [Fact]
    public void SwaponRejectsAFileSmallerThanAPage()
    {
        string path = Path.Combine(_dir, "small");
        File.WriteAllBytes(path, new byte[100]);
        var e = Assert.Throws<InvalidDataException>(() => _table.Swapon(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void SwaponRejectsASparseFile()
    {
        // A valid header on a file whose other pages were never written: the kernel says "swapfile has holes".
        string path = Path.Combine(_dir, "sparse");
        byte[] header = File.ReadAllBytes(Mkswap("model", 64)).AsSpan(0, PageSize).ToArray();
        using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            file.SetLength(64L * PageSize);
            file.Write(header);
        }
        var e = Assert.Throws<InvalidDataException>(() => _table.Swapon(path));
        Assert.Contains("swapfile has holes", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void SwaponOfTheSameFileTwiceIsBusy()
    {
        string path = Mkswap("swap", 20);
        _table.Swapon(path);
        string link = Path.Combine(_dir, "symlink");
        File.CreateSymbolicLink(link, path); // another name for the same inode
        Assert.Contains("EBUSY", Assert.Throws<InvalidOperationException>(() => _table.Swapon(path)).Message);
        Assert.Contains("EBUSY", Assert.Throws<InvalidOperationException>(() => _table.Swapon(link)).Message);
        Assert.Single(_table.Devices);
    }
}
