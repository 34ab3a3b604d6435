using System.Runtime.CompilerServices;
using Allocators.Physical;

namespace Allocators.Slab;

/// <summary>
/// The slab view of a head <see cref="PageFrame"/> (the kernel's <c>struct slab</c> overlay): owning cache in
/// Private, the slab's free list head in Data0, in-use count, object count and list membership in Data1, and in
/// MapCount (unused by slabs otherwise) the id of the thread cache that last took objects from it, and in bits 32..37
/// of the flags word (unused by page flags and zone) the cache's kmalloc class.
/// </summary>
internal static unsafe class SlabPage
{
    private const int KmallocClassShift = 32;

    /// <summary>The kmalloc class bits' value for a slab of a cache that is not a kmalloc cache (and for no slab at all).</summary>
    public const int NoKmallocClass = 63;

    /// <summary>
    /// The slab's kmalloc class (<see cref="NoKmallocClass"/> for other caches), from the flags word that finding the
    /// slab reads anyway: kfree through <see cref="KmallocThread"/> picks its magazine without reading the cache record first.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int KmallocClass(PageFrame* slab) => (int)(slab->FlagsAndZone >> KmallocClassShift) & NoKmallocClass;

    /// <summary>The flag-word bits that record <paramref name="kmallocIndex"/> (-1 for other caches).</summary>
    public static ulong KmallocClassBits(int kmallocIndex) => (ulong)(kmallocIndex & NoKmallocClass) << KmallocClassShift;

    /// <summary>Every bit <see cref="KmallocClassBits"/> may set.</summary>
    public const ulong KmallocClassMask = (ulong)NoKmallocClass << KmallocClassShift;

    public const int ListNone = 0;
    public const int ListPartial = 1;
    public const int ListFull = 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KmemCacheData* Cache(PageFrame* slab) => (KmemCacheData*)slab->Private;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void* Freelist(PageFrame* slab) => (void*)slab->Data0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetFreelist(PageFrame* slab, void* head) => slab->Data0 = (ulong)head;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int InUse(PageFrame* slab) => (int)(uint)slab->Data1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetInUse(PageFrame* slab, int value) => slab->Data1 = (slab->Data1 & ~0xFFFF_FFFFUL) | (uint)value;

    /// <summary>Owner value of a slab that more than one thread cache has refilled from.</summary>
    public const int SharedOwner = -1;

    /// <summary>
    /// Sets the only thread cache that has refilled from this slab since it was last empty (0: none yet;
    /// <see cref="SharedOwner"/>: several). A free by another thread of an object from a slab with a single owner is remote.
    /// </summary>
    public static void SetOwner(PageFrame* slab, int owner) => slab->MapCount = owner;

    /// <summary>Records a refill by <paramref name="owner"/>: the first refiller owns the slab, a second one makes it shared.</summary>
    public static void NoteRefill(PageFrame* slab, int owner)
    {
        int current = slab->MapCount;
        if (current == 0) slab->MapCount = owner;
        else if (current != owner) slab->MapCount = SharedOwner;
    }

    /// <summary>True when <paramref name="slab"/> belongs to one thread cache and that is not <paramref name="self"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsRemote(PageFrame* slab, int self)
    {
        int owner = slab->MapCount;
        return owner > 0 && owner != self;
    }

    public static int List(PageFrame* slab) => (int)(slab->Data1 >> 32);

    public static void SetList(PageFrame* slab, int list) => slab->Data1 = (slab->Data1 & 0xFFFF_FFFFUL) | ((ulong)list << 32);

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
