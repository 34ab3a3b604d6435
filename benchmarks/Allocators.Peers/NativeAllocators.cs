using System.Runtime.InteropServices;

using Allocators.Native;

namespace Allocators.Peers;

/// <summary>
/// The native allocators available for comparison, each loaded on first use by soname with
/// <see cref="NativeLibrary.TryLoad(string, out IntPtr)"/>. A library that is not installed (or
/// cannot be loaded into this process) is reported as absent; nothing here throws.
/// </summary>
/// <remarks>
/// jemalloc as packaged by Debian uses static TLS and loads into a .NET process only when
/// <c>GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384</c> was set before the process started.
/// </remarks>
public static class NativeAllocators
{
    private static readonly Lazy<NativeAllocatorLibrary> s_glibc = new(() => NativeAllocatorLoader.Load(NativeAllocatorSpec.Glibc, 0));
    private static readonly Lazy<NativeAllocatorLibrary> s_mimalloc = new(() => LoadBesideGlibc(NativeAllocatorSpec.Mimalloc));
    private static readonly Lazy<NativeAllocatorLibrary> s_jemalloc = new(() => LoadBesideGlibc(NativeAllocatorSpec.Jemalloc));
    private static readonly Lazy<NativeAllocatorLibrary> s_tcmalloc = new(() => LoadBesideGlibc(NativeAllocatorSpec.Tcmalloc));

    /// <summary>glibc's malloc (ptmalloc2), from <c>libc.so.6</c>.</summary>
    public static NativeAllocatorLibrary Glibc => s_glibc.Value;

    /// <summary>mimalloc (<c>mi_*</c> entry points), from <c>libmimalloc.so.2</c> (Debian package libmimalloc2.0).</summary>
    public static NativeAllocatorLibrary Mimalloc => s_mimalloc.Value;

    /// <summary>jemalloc, from <c>libjemalloc.so.2</c> (Debian package libjemalloc2).</summary>
    public static NativeAllocatorLibrary Jemalloc => s_jemalloc.Value;

    /// <summary>gperftools tcmalloc (<c>tc_*</c> entry points), from <c>libtcmalloc_minimal.so.4</c> (Debian package libtcmalloc-minimal4).</summary>
    public static NativeAllocatorLibrary Tcmalloc => s_tcmalloc.Value;

    /// <summary>All four allocators, available or not, in the order glibc, mimalloc, jemalloc, tcmalloc.</summary>
    public static IReadOnlyList<NativeAllocatorLibrary> All => [Glibc, Mimalloc, Jemalloc, Tcmalloc];

    /// <summary>Loads a spec, refusing a library whose malloc turns out to be glibc's.</summary>
    private static unsafe NativeAllocatorLibrary LoadBesideGlibc(NativeAllocatorSpec spec) =>
        NativeAllocatorLoader.Load(spec, (nint)Glibc.Malloc);
}
