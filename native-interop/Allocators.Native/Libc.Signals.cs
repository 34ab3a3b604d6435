using System.Runtime.InteropServices;

namespace Allocators.Native;

public static unsafe partial class Libc
{
    /// <summary><c>SIGSEGV</c>: invalid memory reference.</summary>
    public const int SigSegv = 11;

    /// <summary>Bytes of glibc's <c>struct sigaction</c> on Linux x86-64 (handler, 128-byte mask, flags, restorer).</summary>
    public const int SigactionSize = 152;

    /// <summary>
    /// <c>sigaction(2)</c> through glibc: installs <paramref name="act"/> for <paramref name="signal"/> (when not null) and
    /// stores the previous action in <paramref name="oldact"/> (when not null). Both point to <see cref="SigactionSize"/>
    /// bytes laid out as glibc's <c>struct sigaction</c>. Returns 0, or -1 with errno set.
    /// </summary>
    [LibraryImport(LibraryName, EntryPoint = "sigaction", SetLastError = true)]
    public static partial int Sigaction(int signal, void* act, void* oldact);
}
