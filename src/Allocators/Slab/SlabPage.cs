using System.Runtime.CompilerServices;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>
/// The slab view of a head <see cref="PageFrame"/> (the kernel's <c>struct slab</c> overlay):
/// <list type="bullet">
/// <item><c>Private</c>: the owning cache (<see cref="KmemCacheData"/>).</item>
/// <item><c>Data0</c>: the slab's own free list (<see cref="Freelist"/>), <c>MapCount</c> its length
/// (<see cref="FreeCount"/>). Written only by the slab's owner thread while a thread owns it, else under the node's
/// list lock.</item>
/// <item><c>Data1</c>: the atomic <see cref="State"/> word: owner thread id, "floating" and "on a node list" bits and
/// the remote free list (head object index and count) that other threads push onto with one compare-exchange.</item>
/// <item><c>Next</c>/<c>Prev</c>: links in a thread's partial list or a node's partial (or, for debug caches, full) list.</item>
/// <item>Bits 32..37 of the flags word (unused by page flags and zone): the cache's kmalloc class; bit 40: on its
/// owner thread's full list.</item>
/// </list>
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

    /// <summary>Flag-word bit (unused by page flags and zone) of a slab on its owner thread's full list (<see cref="SlabCpu.Full"/>).</summary>
    public const ulong OnThreadFullList = 1UL << 40;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KmemCacheData* Cache(PageFrame* slab) => (KmemCacheData*)slab->Private;

    /// <summary>The slab's own free list (hardened links).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void* Freelist(PageFrame* slab) => (void*)slab->Data0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetFreelist(PageFrame* slab, void* head) => slab->Data0 = (ulong)head;

    /// <summary>Objects on <see cref="Freelist"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int FreeCount(PageFrame* slab) => slab->MapCount;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetFreeCount(PageFrame* slab, int count) => slab->MapCount = count;

    // State word layout: bits 0..15 remote head (object index + 1, 0 = empty), 16..31 remote count,
    // 32..61 owner thread context id (0 = none), 62 floating, 63 on a node list.
    private const int CountShift = 16;
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

    /// <summary>Objects on the remote free list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int RemoteCount(long state) => (int)((ulong)state >> CountShift) & 0xFFFF;

    /// <summary>Index + 1 of the remote list's first object, 0 when the list is empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int RemoteHead(long state) => (int)state & 0xFFFF;

    /// <summary>The state of a slab owned by thread context <paramref name="owner"/> with the given remote list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Owned(int owner, int remoteHead = 0, int remoteCount = 0)
        => (long)(((ulong)(uint)owner << OwnerShift) | ((ulong)(uint)remoteCount << CountShift) | (uint)remoteHead);

    /// <summary>The state of a floating slab that <paramref name="lastOwner"/> (0: none) may take back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Floating(int lastOwner) => Owned(lastOwner) | (long)FloatingBit;

    /// <summary>The state of a slab on a node list with the given remote list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long OnNodeState(int remoteHead = 0, int remoteCount = 0) => Owned(0, remoteHead, remoteCount) | unchecked((long)OnNodeBit);

    /// <summary>The same state with one more object, <paramref name="index"/>, at the head of the remote list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long PushRemote(long state, int index)
        => (state & ~0xFFFF_FFFFL) | ((long)(RemoteCount(state) + 1) << CountShift) | (uint)(index + 1);

    /// <summary>A state word with the same owner and flags and an empty remote list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long WithoutRemote(long state) => state & ~0xFFFF_FFFFL;

    /// <summary>Describes a state word for reports.</summary>
    public static string Describe(long state)
        => $"owner={Owner(state)}{(IsFloating(state) ? " floating" : "")}{(OnNode(state) ? " on-node" : "")} remote={RemoteCount(state)}";

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
