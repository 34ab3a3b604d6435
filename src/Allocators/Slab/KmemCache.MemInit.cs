using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;
using Allocators.Threading;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // The system's hardening modes as they apply to this cache (CheckedModeOptions), fixed at creation. The per-thread
    // fast paths serve these caches too: each thread entry carries the modes (SlabCpu.Modes, in the line the fast paths
    // read first), and a set mode sends the operation to AllocHardened/FreeHardened, which do the same work plus the
    // mode's. An object is zeroed on free after the double-free test and before its bit is set, so a refused free
    // writes nothing and a free object is never written. Objects that leave through the slow paths and the node lists
    // get the same treatment there (AllocSlow, FreeChecked, FreeDebug, TakeOneLocked).

    /// <summary>Zero each object as it is allocated (slab_want_init_on_alloc: init_on_alloc, no constructor, no poisoning).</summary>
    private readonly bool _initOnAlloc;

    /// <summary>Zero each object as it is freed (slab_want_init_on_free: init_on_free, no constructor, no poisoning).</summary>
    private readonly bool _initOnFree;

    /// <summary>Hand out a slab's free objects in random order (CONFIG_SLAB_FREELIST_RANDOM).</summary>
    private readonly bool _randomFreelist;

    /// <summary>KFENCE samples one allocation in about this many through the thread entries (<see cref="SlabCpu.SampleMode"/>); 0 for none.</summary>
    private readonly int _kfenceRate;

    /// <summary>
    /// Which hardening modes a cache of <paramref name="flags"/> with or without a constructor applies. A constructor's
    /// work would be undone by zeroing, and poisoning writes its own patterns, so none of these is zeroed, as in the kernel.
    /// </summary>
    private static (bool InitOnAlloc, bool InitOnFree, bool Random) MemInitModes(CheckedModeOptions checks, SlabFlags flags, bool hasCtor)
    {
        // A typesafe-by-RCU cache's stale readers must still find the object's fields (slab_want_init_on_free).
        bool zeroable = !hasCtor && (flags & (SlabFlags.Poison | SlabFlags.TypesafeByRcu)) == 0;
        return (checks.InitOnAlloc && zeroable, checks.InitOnFree && zeroable, checks.SlabFreelistRandom);
    }

    /// <summary>True when objects of this cache are zeroed as they are freed (init_on_free applies to it).</summary>
    internal bool ZeroesOnFree => _initOnFree;

    /// <summary>The modes a thread entry of this cache carries (<see cref="SlabCpu.Modes"/>).</summary>
    private int EntryModes => (_initOnAlloc ? SlabCpu.InitOnAllocMode : 0) | (_initOnFree ? SlabCpu.InitOnFreeMode : 0) | (_randomFreelist ? SlabCpu.RandomMode : 0)
        | (_kfenceRate > 0 ? SlabCpu.SampleMode : 0);

    /// <summary>
    /// KFENCE's 1-in-N count for this cache (<see cref="CheckedModeOptions.KfenceSampleRate"/>), 0 when it is not counted:
    /// caches with a constructor stay with their slabs, as <see cref="TakeSample"/> leaves them.
    /// </summary>
    private int KfenceRate(bool hasCtor) => Samplable(hasCtor) ? _memory.Checks.KfenceSampleRate : 0;

    /// <summary>
    /// True for a cache KFENCE may sample: no constructor (a pool object is not constructed), not typesafe by RCU (a
    /// freed pool object's page is unmapped at once, where a stale RCU reader may still read it), objects of at most a page.
    /// </summary>
    private bool Samplable(bool hasCtor) => !hasCtor && !_d->Has(SlabFlags.TypesafeByRcu) && _d->ObjectSize <= PageFrame.PageSize;

    /// <summary>KFENCE's count for the allocations of a cache the fast paths do not serve (debug, KASAN), shared by its threads.</summary>
    private long _lockedSampleCountdown;

    /// <summary>
    /// Counts one allocation of a cache the fast paths do not serve (they take the locked slow path, which costs more
    /// than an atomic): true when it is the one to sample, and then the next count is drawn.
    /// </summary>
    private bool CountLockedSample()
    {
        if (Interlocked.Decrement(ref _lockedSampleCountdown) > 0) return false;
        DrawLockedSampleCountdown();
        return true;
    }

    /// <summary>The next count of <see cref="CountLockedSample"/>, drawn as the thread entries draw theirs.</summary>
    private void DrawLockedSampleCountdown()
        => Volatile.Write(ref _lockedSampleCountdown, SampleGap((ulong)Random.Shared.NextInt64(), _kfenceRate));

    /// <summary>Draws the entry's allocations until its next sample, from the entry's own random state.</summary>
    private static void DrawSampleCountdown(SlabCpu* c) => c->SampleCountdown = SampleGap(NextRandom(c), c->SampleRate);

    /// <summary>
    /// Allocations until the next sample at rate <paramref name="rate"/>: uniform in 1..2N-1 (mean N) from
    /// <paramref name="random"/>, so samples fall at no fixed stride.
    /// </summary>
    private static long SampleGap(ulong random, long rate) => rate <= 1 ? 1 : 1 + (long)((random >> 1) % (ulong)(2 * rate - 1));

    /// <summary>The next value of the entry's random state (xorshift64*).</summary>
    private static ulong NextRandom(SlabCpu* c)
    {
        ulong x = c->Rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c->Rng = x;
        return x * 0x2545F4914F6CDD1DUL;
    }

    /// <summary>
    /// The fast allocation path of an entry with a hardening mode (inside the context): the stack (empty in random
    /// mode: its frees never push), else the current word's lowest object, else a random or the next free object of the
    /// thread's slabs (<see cref="AllocFromThreadSlabs"/>); zeroed for init_on_alloc. Null when the slow path must run,
    /// which is also how KFENCE's counted sampling hands it the allocation whose count ran out.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void* AllocHardened(SlabThreadContext* ctx, SlabCpu* c, KmemCacheData* d)
    {
        // Counted inline at boot, the count may already be 0 here: at or below it, the sample is due either way.
        if ((c->Modes & SlabCpu.SampleMode) != 0 && --c->SampleCountdown <= 0)
        {
            // The slow path this null leads to takes the sample (TakeSample); the next count starts now.
            Interlocked.Or(ref ctx->Header.DrainRequested, ThreadCacheHeader.CountedSampleBit);
            DrawSampleCountdown(c);
            return null;
        }
        void* obj = null;
        int n = c->Count - 1;
        if (n >= 0) obj = PopStack(c, n);
        else if (c->Word != null) obj = (c->Modes & SlabCpu.RandomMode) == 0 && *c->Word != 0 ? TakeBit(c, d) : AllocFromThreadSlabs(c, d);
        if (obj != null && (c->Modes & SlabCpu.InitOnAllocMode) != 0) NativeMemory.Clear(obj, (nuint)d->ObjectSize);
        return obj;
    }

    /// <summary>
    /// The owner's free of an entry with a hardening mode, once <see cref="FreeToThread"/> found the free valid: zeroes
    /// the object for init_on_free, then frees it in its slab's local bitmap word <paramref name="local"/>, and onto the
    /// stack unless objects come out in random order (the rest of the free is <see cref="FreeToThread"/>'s). Inside
    /// the context.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void FreeHardened(SlabCpu* c, KmemCacheData* d, void* obj, ulong* local, uint index)
    {
        if ((c->Modes & SlabCpu.InitOnFreeMode) != 0) NativeMemory.Clear(obj, (nuint)d->ObjectSize);
        *local |= 1UL << (int)index;
        if ((c->Modes & SlabCpu.RandomMode) == 0) PushStack(c, obj, local, index);
    }

    /// <summary>Zeroes an object being freed (init_on_free), once the free is known to be valid and before the object is free in its slab.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void InitOnFree(void* obj)
    {
        if (_initOnFree) NativeMemory.Clear(obj, (nuint)_d->ObjectSize);
    }

    /// <summary>
    /// kfree_sensitive's part for an object of this cache: refuses what is not a live object, then zeroes its whole
    /// usable size. The bytes past a debug kmalloc's requested size are its red zone: like ksize, it first declares the
    /// whole object in use (skip_orig_size_check) so that the free does not report the zeroes written there.
    /// </summary>
    internal void ZeroForKfreeSensitive(PageFrame* slab, void* obj)
    {
        CheckLiveObject(slab, obj, "kfree_sensitive");
        ResizeInPlace(obj, OriginalSize(obj), _d->ObjectSize, zero: false);
        NativeMemory.Clear(obj, (nuint)_d->ObjectSize);
    }

    /// <summary>
    /// Takes a random free object of the thread's current slab (which has one in its local bitmap): see
    /// <see cref="TakeRandomFreeIndex"/>, with the entry's own random state.
    /// </summary>
    private static void* TakeRandom(SlabCpu* c, KmemCacheData* d)
        => c->SlabObjects + (nuint)(uint)TakeRandomFreeIndex(d, c->Bitmap, NextRandom(c)) * (nuint)(uint)d->Size;

    /// <summary>
    /// Takes a random free object of a slab's local bitmap (its owner, or the node lock held): the <c>r</c>-th set bit
    /// for <c>r</c> uniform over the free objects (from the high half of <paramref name="random"/>), so objects of a
    /// new slab come out in a random order and a freed object's reuse is not predictable. Returns the object's index,
    /// or -1 when the local bitmap is empty.
    /// </summary>
    private static int TakeRandomFreeIndex(KmemCacheData* d, ulong* local, ulong random)
    {
        int words = d->Words;
        int free = 0;
        for (int i = 0; i < words; i++) free += BitOperations.PopCount(local[i]);
        if (free == 0) return -1;
        int r = (int)(((random >> 32) * (ulong)(uint)free) >> 32);
        for (int i = 0; i < words; i++)
        {
            ulong word = local[i];
            int count = BitOperations.PopCount(word);
            if (r >= count)
            {
                r -= count;
                continue;
            }
            int bit = SelectBit(word, r);
            local[i] = word & ~(1UL << bit);
            return i * 64 + bit;
        }
        return -1;
    }

    /// <summary>
    /// The position of the <paramref name="r"/>-th (from 0) set bit of <paramref name="word"/>, which has more than r:
    /// halving by population counts, without a branch (r is random, so every branch would be a misprediction).
    /// </summary>
    private static int SelectBit(ulong word, int r)
    {
        int at = 0;
        for (int width = 32; width > 0; width >>= 1)
        {
            int low = BitOperations.PopCount(word & ((1UL << width) - 1));
            int up = ((low - 1 - r) >> 31) & 1; // 1 when r >= low: the bit is in the upper half
            r -= low & -up;
            word >>= width & -up;
            at += width & -up;
        }
        return at;
    }
}
