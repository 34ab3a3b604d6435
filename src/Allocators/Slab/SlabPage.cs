using System.Numerics;
using System.Runtime.CompilerServices;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>
/// The slab view of a head <see cref="PageFrame"/> (the kernel's <c>struct slab</c> overlay) and of its pages'
/// extension words:
/// <list type="bullet">
/// <item><c>Private</c>: the owning cache (<see cref="KmemCacheData"/>).</item>
/// <item><c>Data1</c>: the atomic <see cref="State"/> word: owner thread id, "floating" and "on a node list" bits.</item>
/// <item><c>Next</c>/<c>Prev</c>: links in a thread's partial or full list, or a node's partial (or, for debug caches,
/// full) list.</item>
/// <item><c>MapCount</c>: while the slab is on a node list, the free objects of its local bitmap (node lock), unless
/// the bitmaps are in the frame (below).</item>
/// <item>Bits 32..37 of the flags word (unused by page flags and zone): the cache's kmalloc class; bits 40 and 41: its
/// owner thread's <see cref="Exhausted"/> and <see cref="OnFullChain"/>.</item>
/// <item><c>Data0</c>: the next slab on the owner thread's full chain.</item>
/// <item>The page_ext words of its pages (<see cref="PageFrame.ExtWords"/> each): two bitmaps of
/// <see cref="KmemCacheData.Words"/> words, bit i for object i. Local: 1 = free, written by the owner thread (or under
/// the node lock when no thread owns the slab); remote (<see cref="KmemCacheData.RemoteDelta"/> words after it): 1 =
/// freed by another thread, set with one atomic OR, taken back into the local bitmap with one exchange per word.</item>
/// </list>
/// A slab of at most 64 objects (<see cref="KmemCacheData.BitmapInFrame"/>: most caches) keeps both one-word bitmaps in
/// its head frame instead, so that a free touches one cache line of metadata: the local bitmap over <c>RefCount</c> and
/// <c>MapCount</c> (a slab page's reference is its slab's; <see cref="FreeCount"/> is then the local bitmap's
/// popcount), the remote one over <c>Data0</c>, and the full-chain link moves to the first page_ext word
/// (<see cref="KmemCache.FullLinkOf"/>). The frame gets <c>RefCount</c> = 1 back when the slab is discarded.
/// Nothing lives in the objects themselves: a stray write into a free object cannot mislead the allocator, and neither
/// an allocation nor a free reads or writes the object's memory.
/// </summary>
internal static unsafe class SlabPage
{
    private const int KmallocClassShift = 32;

    /// <summary>The kmalloc class bits' value for a slab of a cache that is not a kmalloc cache (and for no slab at all).</summary>
    public const int NoKmallocClass = 63;

    /// <summary>The slab's kmalloc class (<see cref="NoKmallocClass"/> for other caches).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int KmallocClass(PageFrame* slab) => (int)(slab->FlagsAndZone >> KmallocClassShift) & NoKmallocClass;

    /// <summary>The flag-word bits that record <paramref name="kmallocIndex"/> (-1 for other caches).</summary>
    public static ulong KmallocClassBits(int kmallocIndex) => (ulong)(kmallocIndex & NoKmallocClass) << KmallocClassShift;

    /// <summary>Every bit <see cref="KmallocClassBits"/> may set.</summary>
    public const ulong KmallocClassMask = (ulong)NoKmallocClass << KmallocClassShift;

    /// <summary>Flag-word bit (unused by page flags and zone): its owner thread handed out every object of the slab and has not freed one since.</summary>
    public const ulong Exhausted = 1UL << 40;

    /// <summary>Flag-word bit: the slab is linked on its owner thread's full chain (<see cref="SlabCpu.Full"/>, through <c>Data0</c>).</summary>
    public const ulong OnFullChain = 1UL << 41;

    /// <summary>Both thread-list bits.</summary>
    public const ulong ThreadListBits = Exhausted | OnFullChain;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KmemCacheData* Cache(PageFrame* slab) => (KmemCacheData*)slab->Private;

    /// <summary>Free objects of the local bitmap while the slab is on a node list (node lock).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int FreeCount(PageFrame* slab)
        => Cache(slab)->BitmapInFrame != 0 ? BitOperations.PopCount(*InFrameLocal(slab)) : slab->MapCount;

    /// <summary>Records the local bitmap's free objects (nothing to record when the bitmaps are in the frame: <see cref="FreeCount"/> counts them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetFreeCount(PageFrame* slab, int count)
    {
        if (Cache(slab)->BitmapInFrame == 0) slab->_mapcount = count;
    }

    /// <summary>Bytes from a head frame to its in-frame local bitmap (<c>RefCount</c> and <c>MapCount</c>).</summary>
    public const int FrameBitmapOffset = 32;

    /// <summary>Words from the in-frame local bitmap to the in-frame remote one (<c>Data0</c>).</summary>
    public const int FrameRemoteDelta = 2;

    /// <summary>The in-frame local bitmap of a slab of a <see cref="KmemCacheData.BitmapInFrame"/> cache.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* InFrameLocal(PageFrame* slab) => (ulong*)((byte*)slab + FrameBitmapOffset);

    /// <summary>The slab's remote bitmap (bit set: another thread freed the object) from its local one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* Remote(ulong* local, KmemCacheData* d) => local + d->RemoteDelta;

    /// <summary>Free objects in a bitmap.</summary>
    public static int Count(ulong* bitmap, int words)
    {
        int count = 0;
        for (int i = 0; i < words; i++) count += BitOperations.PopCount(Volatile.Read(ref bitmap[i]));
        return count;
    }

    /// <summary>True when any word of a bitmap has a bit set.</summary>
    public static bool Any(ulong* bitmap, int words)
    {
        for (int i = 0; i < words; i++)
        {
            if (Volatile.Read(ref bitmap[i]) != 0) return true;
        }
        return false;
    }

    /// <summary>Moves the remote bitmap's bits into the local one (one exchange per non-empty word); how many came.</summary>
    public static int CollectRemote(ulong* local, ulong* remote, int words)
    {
        int count = 0;
        for (int i = 0; i < words; i++)
        {
            if (Volatile.Read(ref remote[i]) == 0) continue;
            ulong taken = Interlocked.Exchange(ref remote[i], 0);
            local[i] |= taken;
            count += BitOperations.PopCount(taken);
        }
        return count;
    }

    // State word layout: bits 32..61 owner thread context id (0 = none), 62 floating, 63 on a node list.
    private const int OwnerShift = 32;
    private const ulong FloatingBit = 1UL << 62;
    private const ulong OnNodeBit = 1UL << 63;
    private const int OwnerMask = (1 << 30) - 1;

    /// <summary>The atomic state word (see the type's remarks); compare-exchanged as a whole.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref long State(PageFrame* slab) => ref *(long*)&slab->Data1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long ReadState(PageFrame* slab) => Volatile.Read(ref *(long*)&slab->Data1);

    /// <summary>
    /// The state's upper half: equal to a thread context's id exactly when that thread owns the slab (a floating slab
    /// or one on a node list has a flag bit set there), so the free fast path's ownership test is one comparison.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int OwnerWord(long state) => (int)((ulong)state >> OwnerShift);

    /// <summary>The id of the thread context that owns the slab, or owned it last when it floats; 0 for none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Owner(long state) => OwnerWord(state) & OwnerMask;

    /// <summary>True while the slab floats: owned by no thread (its last owner may take it back), on no list, no free object.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsFloating(long state) => ((ulong)state & FloatingBit) != 0;

    /// <summary>True while the slab is on one of its node's lists.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool OnNode(long state) => state < 0;

    /// <summary>The state of a slab owned by thread context <paramref name="owner"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Owned(int owner) => (long)((ulong)(uint)owner << OwnerShift);

    /// <summary>The state of a floating slab that <paramref name="lastOwner"/> (0: none) may take back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Floating(int lastOwner) => Owned(lastOwner) | (long)FloatingBit;

    /// <summary>The state of a slab on a node list.</summary>
    public static long OnNodeState => unchecked((long)OnNodeBit);

    /// <summary>Describes a state word for reports.</summary>
    public static string Describe(long state)
        => $"owner={Owner(state)}{(IsFloating(state) ? " floating" : "")}{(OnNode(state) ? " on-node" : "")}";

    public static void Push(PageFrame** head, PageFrame* slab)
    {
        slab->Prev = null;
        slab->Next = *head;
        if (*head != null) (*head)->Prev = slab;
        *head = slab;
    }

    public static void Remove(PageFrame** head, PageFrame* slab)
    {
        if (slab->Prev != null) slab->Prev->Next = slab->Next; else *head = slab->Next;
        if (slab->Next != null) slab->Next->Prev = slab->Prev;
        slab->Next = slab->Prev = null;
    }
}
