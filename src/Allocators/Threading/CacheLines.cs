using System.Runtime.InteropServices;

namespace Allocators.Threading;

/// <summary>Native blocks that one thread writes all the time and no other thread should ever pull into its cache.</summary>
internal static unsafe class CacheLines
{
    /// <summary>
    /// The span two threads' hot data must not share: two 64-byte lines, since the L2 prefetchers (Intel's spatial
    /// prefetcher, AMD's up/down prefetcher) fetch a line's 128-byte buddy along with it, so writes to neighbouring
    /// lines by two cores still ping-pong.
    /// </summary>
    public const int FalseSharingSpan = 128;

    /// <summary>Bytes in one cache line (L1_CACHE_BYTES on x86-64 and arm64 server parts).</summary>
    public const int Size = 64;

    /// <summary>Allocates <paramref name="bytes"/> rounded up to, and aligned on, <see cref="FalseSharingSpan"/>; free with <see cref="Free"/>.</summary>
    public static void* AllocIsolated(nuint bytes)
        => NativeMemory.AlignedAlloc((bytes + FalseSharingSpan - 1) & ~(nuint)(FalseSharingSpan - 1), FalseSharingSpan);

    /// <summary>Frees a block from <see cref="AllocIsolated"/>.</summary>
    public static void Free(void* block) => NativeMemory.AlignedFree(block);
}
