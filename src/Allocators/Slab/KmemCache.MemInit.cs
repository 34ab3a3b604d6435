using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Slab;

public sealed unsafe partial class KmemCache
{
    // The system's hardening modes as they apply to this cache (CheckedModeOptions), fixed at creation. A cache with
    // any of them is served like a debug cache (KmemCacheData.FastPath 0, its debug hooks doing nothing without debug
    // flags): every object leaves and comes back under its node's list lock (TakeFromNodesLocked, FreeDebug), where the
    // per-object work is done, the double-free test and the free being one step under that lock. The per-thread fast
    // paths of every other cache carry no test for the modes.

    /// <summary>Zero each object as it is allocated (slab_want_init_on_alloc: init_on_alloc, no constructor, no poisoning).</summary>
    private readonly bool _initOnAlloc;

    /// <summary>Zero each object as it is freed (slab_want_init_on_free: init_on_free, no constructor, no poisoning).</summary>
    private readonly bool _initOnFree;

    /// <summary>Hand out a slab's free objects in random order (CONFIG_SLAB_FREELIST_RANDOM).</summary>
    private readonly bool _randomFreelist;

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

    /// <summary>True when a hardening mode needs every object of this cache to go through its node lists under their lock.</summary>
    private bool MemInitKeepsFastPathOff => _initOnAlloc || _initOnFree || _randomFreelist;

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
    /// Takes a random free object of a slab's local bitmap (node lock held): the <c>r</c>-th set bit for a uniform
    /// <c>r</c>, so objects of a new slab come out in a random order and a freed object's reuse is not predictable.
    /// Returns the object's index, or -1 when the local bitmap is empty.
    /// </summary>
    private int TakeRandomFreeIndex(ulong* local)
    {
        int words = _d->Words;
        int free = 0;
        for (int i = 0; i < words; i++) free += BitOperations.PopCount(local[i]);
        if (free == 0) return -1;
        int r = Random.Shared.Next(free);
        for (int i = 0; i < words; i++)
        {
            ulong word = local[i];
            int count = BitOperations.PopCount(word);
            if (r >= count)
            {
                r -= count;
                continue;
            }
            for (; r > 0; r--) word &= word - 1; // drop the r lowest set bits
            int bit = BitOperations.TrailingZeroCount(word);
            local[i] &= ~(1UL << bit);
            return i * 64 + bit;
        }
        return -1;
    }
}
