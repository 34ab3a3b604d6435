using System.Runtime.InteropServices;

namespace Allocators.Native;

/// <summary>Names and messages for Linux errno values.</summary>
public static class Errno
{
    /// <summary>Returns the symbolic name of a Linux x86-64 errno value (for example <c>ENOMEM</c>), or <c>E?</c> followed by the number.</summary>
    /// <param name="errno">The errno value.</param>
    /// <returns>The symbolic name.</returns>
    public static string Name(int errno) => errno switch
    {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        29 => "ESPIPE",
        30 => "EROFS",
        38 => "ENOSYS",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        _ => "E?" + errno,
    };

    /// <summary>Returns the C library's message for an errno value (as <c>strerror</c> would).</summary>
    /// <param name="errno">The errno value.</param>
    /// <returns>The message text.</returns>
    public static string Message(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
