namespace Allocators.Native;

/// <summary>
/// A failed system call made by <see cref="HostMemory"/>. The message names the call,
/// its arguments, the errno value, its symbolic name and the C library's text for it.
/// </summary>
public sealed class HostMemoryException : IOException
{
    /// <summary>Creates an exception with no errno (0) and a default message.</summary>
    public HostMemoryException()
        : this("A host memory operation failed.")
    {
    }

    /// <summary>Creates an exception with no errno (0).</summary>
    /// <param name="message">The message.</param>
    public HostMemoryException(string message)
        : base(message)
    {
        Operation = string.Empty;
    }

    /// <summary>Creates an exception with no errno (0) wrapping another exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public HostMemoryException(string message, Exception innerException)
        : base(message, innerException)
    {
        Operation = string.Empty;
    }

    /// <summary>Creates an exception for a failed system call.</summary>
    /// <param name="operation">The call that failed, for example <c>mmap</c>.</param>
    /// <param name="errno">The errno value the call left.</param>
    /// <param name="arguments">A readable rendering of the call's arguments.</param>
    public HostMemoryException(string operation, int errno, string arguments)
        : base(Format(operation, errno, arguments))
    {
        Operation = operation;
        Errno = errno;
    }

    /// <summary>The errno value reported by the failed call, or 0 when none applies.</summary>
    public int Errno { get; }

    /// <summary>The symbolic name of <see cref="Errno"/>, for example <c>ENOMEM</c>.</summary>
    public string ErrnoName => Native.Errno.Name(Errno);

    /// <summary>The name of the call that failed, or empty when none applies.</summary>
    public string Operation { get; }

    private static string Format(string operation, int errno, string arguments) =>
        $"{operation}({arguments}) failed: errno {errno} ({Native.Errno.Name(errno)}: {Native.Errno.Message(errno)})";
}
