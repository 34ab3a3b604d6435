using System.Runtime.InteropServices;
using Allocators.Native;
using Allocators.Physical;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Swap;

public sealed unsafe partial class SwapDevice
{
    private const int Eopnotsupp = 95;
    private const int Enxio = 6;

    /// <summary>
    /// Makes <paramref name="path"/> a swap area of <paramref name="sizeBytes"/> (rounded down to whole pages), like
    /// <c>mkswap</c> on a file made with fallocate: the file is created or truncated, its blocks allocated (no holes, or
    /// swapon refuses it), and page 0 gets a v1 header with last_page = pages - 1, no bad pages, a random UUID and no label.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than 10 pages (mkswap's minimum), or more than a header can describe.</exception>
    /// <exception cref="IOException">The file could not be created, allocated or written.</exception>
    public static void Mkswap(string path, long sizeBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long pages = sizeBytes / PageFrame.PageSize;
        if (pages < SwapHeader.MinPages)
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), sizeBytes, $"mkswap: {path}: swap area needs to be at least {SwapHeader.MinPages * PageFrame.PageSize / 1024} KiB.");
        if (pages > uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), sizeBytes, $"mkswap: {path}: a v1 header describes at most {uint.MaxValue} pages.");
        long bytes = pages * PageFrame.PageSize;
        using SafeFileHandle file = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite);
        Allocate(file, path, bytes);
        Span<byte> header = stackalloc byte[PageFrame.PageSize];
        SwapHeader.Write(header, (uint)pages, Guid.NewGuid(), "");
        RandomAccess.Write(file, header, 0);
    }

    /// <summary>Gives the file real blocks for all of <paramref name="bytes"/>: fallocate, or zeros where the file system cannot.</summary>
    private static void Allocate(SafeFileHandle file, string path, long bytes)
    {
        if (OperatingSystem.IsLinux())
        {
            bool added = false;
            file.DangerousAddRef(ref added);
            try
            {
                if (Libc.Fallocate((int)file.DangerousGetHandle(), 0, 0, bytes) == 0) return;
                int errno = Marshal.GetLastPInvokeError();
                if (errno != Eopnotsupp)
                    throw new IOException($"mkswap: {path}: fallocate of {bytes} bytes failed: {Errno.Name(errno)} ({Errno.Message(errno)}).", errno | unchecked((int)0x80070000));
            }
            finally
            {
                if (added) file.DangerousRelease();
            }
        }
        byte[] zeros = new byte[1 << 20];
        for (long at = 0; at < bytes; at += zeros.Length)
            RandomAccess.Write(file, zeros.AsSpan(0, (int)Math.Min(zeros.Length, bytes - at)), at);
    }

    /// <summary>Reads and checks page 0; returns maxpages (last_page + 1).</summary>
    private static uint ReadHeader(SafeFileHandle file, string path)
    {
        long length = RandomAccess.GetLength(file);
        if (length < PageFrame.PageSize)
            throw new InvalidDataException($"swapon: {path}: {length} bytes is too small to hold a swap header (one {PageFrame.PageSize}-byte page).");
        Span<byte> header = stackalloc byte[PageFrame.PageSize];
        if (RandomAccess.Read(file, header, 0) != PageFrame.PageSize)
            throw new InvalidDataException($"swapon: {path}: short read of the swap header.");
        return SwapHeader.Validate(header, path, length);
    }

    /// <summary>Bytes of disk blocks the file has (st_blocks * 512). File reference held.</summary>
    private static long AllocatedBytes(SafeFileHandle file, string path)
    {
        const int StBlocksOffset = 64; // struct stat on x86-64: st_blocks after st_size (48) and st_blksize (56)
        byte* stat = stackalloc byte[256];
        if (Libc.Fstat((int)file.DangerousGetHandle(), stat) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"swapon: {path}: fstat failed: {Errno.Name(errno)} ({Errno.Message(errno)}).", errno | unchecked((int)0x80070000));
        }
        return *(long*)(stat + StBlocksOffset) * 512;
    }

    /// <summary>
    /// Refuses a file with a hole in its first <paramref name="bytes"/> (generic_swapfile_activate: "swapon: swapfile has
    /// holes"): swap writes go straight to the file's blocks and must never have to allocate.
    /// </summary>
    private static void CheckNoHoles(SafeFileHandle file, string path, long bytes)
    {
        if (!OperatingSystem.IsLinux()) return;
        bool added = false;
        file.DangerousAddRef(ref added);
        try
        {
            long hole = Libc.Lseek((int)file.DangerousGetHandle(), 0, Libc.SeekHole);
            if (hole < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Enxio) return; // no hole at or after 0 (empty file; cannot happen past the header check)
                throw new IOException($"swapon: {path}: lseek(SEEK_HOLE) failed: {Errno.Name(errno)} ({Errno.Message(errno)}).", errno | unchecked((int)0x80070000));
            }
            // SEEK_HOLE also reports fallocated but never written (unwritten) extents, which the kernel accepts: they
            // have blocks. Only when the blocks do not cover the area is there a real hole.
            if (hole < bytes && AllocatedBytes(file, path) < bytes)
                throw new InvalidDataException($"swapon: {path}: swapfile has holes (the first at byte {hole}, inside the {bytes}-byte swap area).");
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }
}
