namespace Allocators.Native;

/// <summary>
/// Raw bindings to the C library (glibc on Linux x86-64) used by the allocators.
/// The functions return exactly what libc returns; errno is captured through
/// <see cref="System.Runtime.InteropServices.Marshal.GetLastPInvokeError"/> for the
/// calls that can fail. Prefer <see cref="HostMemory"/> for checked wrappers.
/// </summary>
public static unsafe partial class Libc
{
    /// <summary>The library name handed to the runtime; CoreCLR maps "libc" to the platform's C library.</summary>
    internal const string LibraryName = "libc";

    /// <summary>True when the process runs on Linux, the only platform these bindings target.</summary>
    public static bool IsLinux => OperatingSystem.IsLinux();

    /// <summary>The value <c>mmap</c> returns on failure: <c>(void*)-1</c>.</summary>
    public static void* MapFailed => (void*)-1;

    /// <summary><c>PROT_NONE</c>: pages may not be accessed.</summary>
    public const int ProtNone = 0x0;

    /// <summary><c>PROT_READ</c>: pages may be read.</summary>
    public const int ProtRead = 0x1;

    /// <summary><c>PROT_WRITE</c>: pages may be written.</summary>
    public const int ProtWrite = 0x2;

    /// <summary><c>PROT_EXEC</c>: pages may be executed.</summary>
    public const int ProtExec = 0x4;

    /// <summary><c>MAP_SHARED</c>: updates are visible to other mappings of the same object.</summary>
    public const int MapShared = 0x01;

    /// <summary><c>MAP_PRIVATE</c>: copy-on-write mapping private to this process.</summary>
    public const int MapPrivate = 0x02;

    /// <summary><c>MAP_FIXED</c>: place the mapping exactly at the hint, replacing what is there.</summary>
    public const int MapFixed = 0x10;

    /// <summary><c>MAP_ANONYMOUS</c>: the mapping is not backed by a file; contents start zeroed.</summary>
    public const int MapAnonymous = 0x20;

    /// <summary><c>MAP_NORESERVE</c>: do not reserve swap space for the mapping.</summary>
    public const int MapNoReserve = 0x4000;

    /// <summary><c>MAP_POPULATE</c>: prefault the page tables of the mapping.</summary>
    public const int MapPopulate = 0x8000;

    /// <summary><c>MAP_FIXED_NOREPLACE</c>: like <see cref="MapFixed"/> but fail with EEXIST instead of replacing (Linux 4.17+).</summary>
    public const int MapFixedNoReplace = 0x100000;

    /// <summary><c>MADV_NORMAL</c>: no special treatment.</summary>
    public const int MadvNormal = 0;

    /// <summary><c>MADV_WILLNEED</c>: expect access soon; start read-ahead.</summary>
    public const int MadvWillNeed = 3;

    /// <summary><c>MADV_DONTNEED</c>: drop the pages; private anonymous memory reads back as zeros.</summary>
    public const int MadvDontNeed = 4;

    /// <summary><c>MADV_FREE</c>: pages may be reclaimed lazily; contents are undefined until written.</summary>
    public const int MadvFree = 8;

    /// <summary><c>MADV_REMOVE</c>: free the range and its backing store (shmem/tmpfs), like punching a hole.</summary>
    public const int MadvRemove = 9;

    /// <summary><c>MADV_HUGEPAGE</c>: enable transparent huge pages for the range.</summary>
    public const int MadvHugePage = 14;

    /// <summary><c>MADV_NOHUGEPAGE</c>: disable transparent huge pages for the range.</summary>
    public const int MadvNoHugePage = 15;

    /// <summary><c>FALLOC_FL_KEEP_SIZE</c>: do not change the file size.</summary>
    public const int FallocFlKeepSize = 0x01;

    /// <summary><c>FALLOC_FL_PUNCH_HOLE</c>: deallocate the range; must be combined with <see cref="FallocFlKeepSize"/>.</summary>
    public const int FallocFlPunchHole = 0x02;

    /// <summary><c>MFD_CLOEXEC</c>: set close-on-exec on the new memfd.</summary>
    public const uint MfdCloexec = 0x0001;

    /// <summary><c>MFD_ALLOW_SEALING</c>: allow seals to be placed on the memfd.</summary>
    public const uint MfdAllowSealing = 0x0002;

    /// <summary><c>_SC_PAGESIZE</c> for <c>sysconf</c> on Linux.</summary>
    internal const int ScPageSize = 30;
}
