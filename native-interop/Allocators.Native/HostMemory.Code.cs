namespace Allocators.Native;

public static unsafe partial class HostMemory
{
    /// <summary>
    /// Copies <paramref name="code"/> (position-independent machine code) into a fresh private page and makes the page
    /// read and execute only (<c>mmap</c> read/write, copy, <c>mprotect</c> read/exec: never writable and executable at
    /// once). The page is never unmapped: callers keep function pointers into it for the life of the process.
    /// </summary>
    /// <param name="code">The bytes, at most one page; any data the code reads is patched in before the call.</param>
    /// <returns>The start of the code, or null where the kernel refuses (not Linux, or a policy that forbids executable
    /// anonymous memory).</returns>
    public static byte* MapCode(ReadOnlySpan<byte> code)
    {
        if (!Libc.IsLinux || code.IsEmpty || (nuint)code.Length > s_pageSize) return null;
        var page = (byte*)Libc.Mmap(null, s_pageSize, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (page == Libc.MapFailed) return null;
        code.CopyTo(new Span<byte>(page, code.Length));
        if (Libc.Mprotect(page, s_pageSize, Libc.ProtRead | Libc.ProtExec) == 0) return page;
        Libc.Munmap(page, s_pageSize);
        return null;
    }

    /// <summary>
    /// The calling thread's stack as glibc knows it (<c>pthread_getattr_np</c>, <c>pthread_attr_getstack</c>):
    /// [<paramref name="low"/>, <paramref name="high"/>). For the main thread glibc derives it from the stack rlimit.
    /// </summary>
    /// <param name="low">Receives the lowest address of the stack.</param>
    /// <param name="high">Receives the address just past its top.</param>
    /// <returns>False (both zero) off Linux or when glibc cannot tell.</returns>
    public static bool TryGetThreadStack(out nuint low, out nuint high)
    {
        low = high = 0;
        if (!Libc.IsLinux) return false;
        byte* attr = stackalloc byte[Libc.PthreadAttrSize];
        if (Libc.PthreadGetattrNp(Libc.PthreadSelf(), attr) != 0) return false;
        void* addr;
        nuint size;
        int rc = Libc.PthreadAttrGetstack(attr, &addr, &size);
        Libc.PthreadAttrDestroy(attr);
        if (rc != 0 || size == 0) return false;
        low = (nuint)addr;
        high = low + size;
        return true;
    }
}
