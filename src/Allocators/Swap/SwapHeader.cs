using System.Buffers.Binary;
using System.Text;
using Allocators.Physical;

namespace Allocators.Swap;

/// <summary>
/// The mkswap v1 header in page 0 of a swap area (union swap_header, include/linux/swap.h): 1024 bytes of boot bits, then
/// <c>version</c>, <c>last_page</c>, <c>nr_badpages</c> (u32 each), a 16-byte UUID, a 16-byte volume label, padding
/// and the bad-page list; the signature "SWAPSPACE2" fills the page's last 10 bytes. Host byte order (little-endian),
/// as mkswap writes it.
/// </summary>
internal static class SwapHeader
{
    public const int VersionOffset = 1024;
    public const int LastPageOffset = 1028;
    public const int NrBadPagesOffset = 1032;
    public const int UuidOffset = 1036;
    public const int VolumeOffset = 1052;
    public const int BadPagesOffset = 1536; // after padding[117]
    public const int MagicOffset = PageFrame.PageSize - 10;

    /// <summary>MAX_SWAP_BADPAGES: the bad-page list runs up to the signature.</summary>
    public const int MaxBadPages = (MagicOffset - BadPagesOffset) / sizeof(uint);

    /// <summary>util-linux mkswap's MIN_GOODPAGES: smaller areas are refused.</summary>
    public const int MinPages = 10;

    public static ReadOnlySpan<byte> Magic => "SWAPSPACE2"u8;

    /// <summary>Fills <paramref name="page"/> (one page, zeroed first) with a v1 header for an area of <paramref name="pages"/> pages.</summary>
    public static void Write(Span<byte> page, uint pages, Guid uuid, string label)
    {
        page.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(page[VersionOffset..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(page[LastPageOffset..], pages - 1);
        BinaryPrimitives.WriteUInt32LittleEndian(page[NrBadPagesOffset..], 0);
        uuid.TryWriteBytes(page.Slice(UuidOffset, 16), bigEndian: true, out _); // RFC 4122 byte order, as libuuid stores it
        Encoding.UTF8.GetBytes(label, page.Slice(VolumeOffset, 16));
        Magic.CopyTo(page[MagicOffset..]);
    }

    /// <summary>
    /// Checks a header read from <paramref name="path"/> (read_swap_header) against a file of <paramref name="fileBytes"/>
    /// bytes and returns maxpages (last_page + 1: the header page and the usable slots).
    /// </summary>
    /// <exception cref="InvalidDataException">The header is not a usable v1 swap header; the message says why, in the kernel's words.</exception>
    public static uint Validate(ReadOnlySpan<byte> page, string path, long fileBytes)
    {
        if (!page[MagicOffset..].SequenceEqual(Magic))
            throw Invalid(path, "Unable to find swap-space signature");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(page[VersionOffset..]);
        if (version != 1)
            throw Invalid(path, $"Unable to handle swap header version {version}");
        uint lastPage = BinaryPrimitives.ReadUInt32LittleEndian(page[LastPageOffset..]);
        if (lastPage == 0)
            throw Invalid(path, "Empty swap-file");
        if (lastPage == uint.MaxValue || (long)lastPage + 1 > fileBytes / PageFrame.PageSize)
            throw Invalid(path, $"Swap area shorter than signature indicates (last_page {lastPage}, file has {fileBytes / PageFrame.PageSize} pages)");
        uint badPages = BinaryPrimitives.ReadUInt32LittleEndian(page[NrBadPagesOffset..]);
        if (badPages != 0)
            throw Invalid(path, $"nr_badpages {badPages}: a swap file (not a partition) may list no bad pages");
        return lastPage + 1;
    }

    private static InvalidDataException Invalid(string path, string why) => new($"swapon: {path}: {why}.");
}
