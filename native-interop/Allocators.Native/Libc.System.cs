using System.Runtime.InteropServices;

namespace Allocators.Native;

public static unsafe partial class Libc
{
    /// <summary><c>sched_getcpu(3)</c>: the CPU the calling thread is running on, or -1 on failure.</summary>
    /// <returns>A CPU number, or -1.</returns>
    [LibraryImport(LibraryName, EntryPoint = "sched_getcpu")]
    [SuppressGCTransition]
    public static partial int SchedGetCpu();

    /// <summary><c>get_nprocs(3)</c>: the number of processors currently online.</summary>
    /// <returns>The online processor count.</returns>
    [LibraryImport(LibraryName, EntryPoint = "get_nprocs")]
    [SuppressGCTransition]
    public static partial int GetNprocs();

    /// <summary><c>get_nprocs_conf(3)</c>: the number of processors configured by the operating system.</summary>
    /// <returns>The configured processor count.</returns>
    [LibraryImport(LibraryName, EntryPoint = "get_nprocs_conf")]
    [SuppressGCTransition]
    public static partial int GetNprocsConf();

    /// <summary><c>sysconf(_SC_PAGESIZE)</c>: the base page size in bytes.</summary>
    /// <returns>The page size, or -1 on failure.</returns>
    public static long SysconfPageSize() => Sysconf(ScPageSize);

    [LibraryImport(LibraryName, EntryPoint = "sysconf", SetLastError = true)]
    private static partial long Sysconf(int name);
}
