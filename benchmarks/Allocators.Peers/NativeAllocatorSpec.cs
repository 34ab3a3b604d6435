using Allocators.Native;

namespace Allocators.Peers;

/// <summary>How to find one allocator: the file names to try, the package that ships it and the symbol sets it may export.</summary>
/// <param name="Name">Short allocator name.</param>
/// <param name="Candidates">Shared-object names handed to the dynamic loader, in order.</param>
/// <param name="Package">Debian package that provides the library.</param>
/// <param name="SymbolSets">Alternative sets of malloc, free, calloc, realloc and aligned-alloc symbol names; the first complete set wins.</param>
internal sealed record NativeAllocatorSpec(string Name, string[] Candidates, string Package, string[][] SymbolSets)
{
    private static readonly string[] s_libcSymbols = ["malloc", "free", "calloc", "realloc", "aligned_alloc"];

    /// <summary>The process C library.</summary>
    public static NativeAllocatorSpec Glibc { get; } =
        new("glibc", ["libc.so.6"], "libc6", [s_libcSymbols]);

    /// <summary>Microsoft's mimalloc; its prefixed <c>mi_*</c> API.</summary>
    public static NativeAllocatorSpec Mimalloc { get; } =
        new("mimalloc", ["libmimalloc.so.2", "libmimalloc.so"], "libmimalloc2.0",
            [["mi_malloc", "mi_free", "mi_calloc", "mi_realloc", "mi_aligned_alloc"]]);

    /// <summary>jemalloc; Debian builds it without a prefix, other builds export <c>je_*</c>.</summary>
    public static NativeAllocatorSpec Jemalloc { get; } =
        new("jemalloc", ["libjemalloc.so.2", "libjemalloc.so"], "libjemalloc2",
            [["je_malloc", "je_free", "je_calloc", "je_realloc", "je_aligned_alloc"], s_libcSymbols]);

    /// <summary>gperftools tcmalloc; its prefixed <c>tc_*</c> API (<c>tc_memalign</c> takes alignment first, like aligned_alloc).</summary>
    public static NativeAllocatorSpec Tcmalloc { get; } =
        new("tcmalloc", ["libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so"], "libtcmalloc-minimal4",
            [["tc_malloc", "tc_free", "tc_calloc", "tc_realloc", "tc_memalign"]]);
}
