using System.Runtime.InteropServices;

namespace Allocators.Native;

/// <summary>
/// Checked wrappers over the Linux memory system calls: address-space reservation,
/// memfd-backed shared mappings, discarding and hole punching, CPU identity and
/// resident-set statistics. Failures throw <see cref="HostMemoryException"/>.
/// </summary>
public static unsafe partial class HostMemory
{
    private static readonly nuint s_pageSize = DetectPageSize();

    /// <summary>The base page size in bytes (4096 on x86-64).</summary>
    public static nuint PageSize => s_pageSize;

    private static nuint DetectPageSize()
    {
        if (Libc.IsLinux)
        {
            long size = Libc.SysconfPageSize();
            if (size > 0)
            {
                return (nuint)size;
            }
        }

        return (nuint)Environment.SystemPageSize;
    }

    /// <summary>Throws a <see cref="HostMemoryException"/> built from the errno of the last P/Invoke.</summary>
    private static HostMemoryException Failure(string operation, string arguments) =>
        new(operation, Marshal.GetLastPInvokeError(), arguments);

    private static string Hex(void* p) => "0x" + ((nuint)p).ToString("x");

    private static string Hex(nuint n) => "0x" + n.ToString("x");

    private static void RequirePageAligned(void* addr, string paramName)
    {
        if (((nuint)addr & (s_pageSize - 1)) != 0)
        {
            throw new ArgumentException($"Address {Hex(addr)} is not aligned to the page size ({s_pageSize}).", paramName);
        }
    }

    private static void RequirePositive(nuint length, string paramName)
    {
        if (length == 0)
        {
            throw new ArgumentOutOfRangeException(paramName, "Length must be greater than zero.");
        }
    }
}
