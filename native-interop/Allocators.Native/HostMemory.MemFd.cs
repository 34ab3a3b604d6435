namespace Allocators.Native;

public static unsafe partial class HostMemory
{
    /// <summary>
    /// Creates an anonymous memory file (<c>memfd_create</c> with <c>MFD_CLOEXEC</c>) and sizes it
    /// with <c>ftruncate</c>. The file's pages are allocated on first touch.
    /// </summary>
    /// <param name="name">Debug name of the file.</param>
    /// <param name="size">Initial size in bytes; may be zero.</param>
    /// <returns>The file descriptor; close it with <see cref="CloseFd"/>.</returns>
    /// <exception cref="HostMemoryException">A call failed.</exception>
    public static int CreateMemFd(string name, long size)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        int fd = Libc.MemfdCreate(name, Libc.MfdCloexec);
        if (fd < 0)
        {
            throw Failure("memfd_create", $"\"{name}\", MFD_CLOEXEC");
        }

        try
        {
            ResizeMemFd(fd, size);
        }
        catch
        {
            _ = Libc.Close(fd);
            throw;
        }

        return fd;
    }

    /// <summary>Sets the size of a file with <c>ftruncate</c>; shrinking frees the cut-off pages.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="size">New size in bytes.</param>
    /// <exception cref="HostMemoryException">The call failed.</exception>
    public static void ResizeMemFd(int fd, long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (Libc.Ftruncate(fd, size) != 0)
        {
            throw Failure("ftruncate", $"{fd}, {size}");
        }
    }

    /// <summary>Closes a file descriptor.</summary>
    /// <param name="fd">File descriptor.</param>
    /// <exception cref="HostMemoryException">The call failed (for example EBADF).</exception>
    public static void CloseFd(int fd)
    {
        if (Libc.Close(fd) != 0)
        {
            throw Failure("close", fd.ToString());
        }
    }

    /// <summary>
    /// Maps <paramref name="length"/> bytes of the file at <paramref name="offset"/> exactly at
    /// <paramref name="addr"/> (<c>MAP_SHARED|MAP_FIXED</c>), replacing whatever was mapped there.
    /// Several mappings of the same range see the same bytes.
    /// </summary>
    /// <param name="addr">Page-aligned destination address.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="fd">File descriptor, typically from <see cref="CreateMemFd"/>.</param>
    /// <param name="offset">Page-aligned offset in the file.</param>
    /// <param name="writable">Map read/write when true, read-only otherwise.</param>
    /// <exception cref="HostMemoryException">The kernel refused the mapping or placed it elsewhere.</exception>
    public static void MapSharedFixed(void* addr, nuint length, int fd, long offset, bool writable = true)
    {
        RequirePageAligned(addr, nameof(addr));
        RequirePositive(length, nameof(length));
        if (offset < 0 || ((ulong)offset & (s_pageSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"Offset must be a non-negative multiple of the page size ({s_pageSize}).");
        }

        int prot = writable ? Libc.ProtRead | Libc.ProtWrite : Libc.ProtRead;
        void* result = Libc.Mmap(addr, length, prot, Libc.MapShared | Libc.MapFixed, fd, offset);
        if (result == addr) return;
        string protText = writable ? "PROT_READ|PROT_WRITE" : "PROT_READ";
        CheckFixed(result, addr, $"{Hex(addr)}, {Hex(length)}, {protText}, MAP_SHARED|MAP_FIXED, {fd}, {offset}");
    }

    /// <summary>
    /// Frees the file pages in a range while keeping the file size
    /// (<c>fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE)</c>); the range reads back as zeros
    /// through every mapping. Falling back to <c>MADV_REMOVE</c> when this fails is up to the caller.
    /// </summary>
    /// <param name="fd">File descriptor.</param>
    /// <param name="offset">Start of the range in bytes.</param>
    /// <param name="length">Length of the range in bytes.</param>
    /// <exception cref="HostMemoryException">The call failed (EOPNOTSUPP on file systems without hole punching).</exception>
    public static void PunchHole(int fd, long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (Libc.Fallocate(fd, Libc.FallocFlPunchHole | Libc.FallocFlKeepSize, offset, length) != 0)
        {
            throw Failure("fallocate", $"{fd}, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE, {offset}, {length}");
        }
    }
}
