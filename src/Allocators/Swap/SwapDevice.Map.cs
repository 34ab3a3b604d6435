using Allocators.Common;
using Allocators.Threading;

namespace Allocators.Swap;

public sealed unsafe partial class SwapDevice
{
    private const ushort CountMask = 0x7fff;

    /// <summary>
    /// One more PTE holds <paramref name="entry"/> (swap_duplicate): count + 1. The slot must be in use (a count or the
    /// swap-cache bit).
    /// </summary>
    /// <exception cref="MemoryCorruptionException">The entry is not of this device, out of range, free or bad.</exception>
    /// <exception cref="InvalidOperationException">The count is already <see cref="SwapMapMax"/>.</exception>
    internal void Duplicate(SwapEntry entry) => Update(entry, MapOp.Duplicate);

    /// <summary>
    /// Claims the slot for the swap cache before reading it in (swapcache_prepare): sets SwapHasCache and returns true;
    /// false when the bit is already set (the page is in the swap cache, or another thread is reading it) or the slot
    /// is free (-ENOENT: the PTE the caller read went meanwhile).
    /// </summary>
    /// <exception cref="MemoryCorruptionException">The entry is not of this device or out of range.</exception>
    internal bool SwapcachePrepare(SwapEntry entry)
    {
        ushort old = Update(entry, MapOp.Prepare);
        return old != 0 && (old & SwapHasCache) == 0;
    }

    /// <summary>
    /// A PTE that held <paramref name="entry"/> went away (swap_free): count - 1; the slot is freed when nothing holds it
    /// any more. Returns the new count (without the swap-cache bit).
    /// </summary>
    /// <exception cref="MemoryCorruptionException">The entry is not of this device, out of range, or its count is 0.</exception>
    internal int SwapFree(SwapEntry entry) => (Update(entry, MapOp.Free) & CountMask) - 1;

    /// <summary>
    /// The page left the swap cache (put_swap_folio / swapcache_clear): clears SwapHasCache, and frees the slot when no
    /// PTE holds it either.
    /// </summary>
    /// <exception cref="MemoryCorruptionException">The entry is not of this device, out of range, or not in the swap cache.</exception>
    internal void PutSwapCache(SwapEntry entry) => Update(entry, MapOp.PutCache);

    private enum MapOp { Duplicate, Prepare, Free, PutCache }

    /// <summary>
    /// Applies <paramref name="op"/> to the slot's map entry under its cluster lock and returns the entry as it was; frees
    /// the slot when the entry becomes 0. Misuse throws before anything changes.
    /// </summary>
    private ushort Update(SwapEntry entry, MapOp op)
    {
        string caller = op switch
        {
            MapOp.Duplicate => "swap_dup",
            MapOp.Prepare => "swapcache_prepare",
            MapOp.Free => "swap_free",
            _ => "put_swap_folio",
        };
        uint offset = CheckEntry(entry, caller);
        SwapClusterInfo* ci = &_clusters[offset >> ClusterShift];
        NativeSpinLock.Acquire(&ci->Lock);
        try
        {
            ushort value = _map[offset];
            ushort next = op switch
            {
                MapOp.Duplicate when value == 0 || value == SwapMapBad => throw Corrupt(caller, "Bad swap offset entry", entry, value),
                MapOp.Duplicate when (value & CountMask) == SwapMapMax => throw new InvalidOperationException(
                    $"swap_dup: swap offset entry {entry.Value:x8} on {Path} is already shared by {SwapMapMax} PTEs (SWAP_MAP_MAX)."),
                MapOp.Duplicate => (ushort)(value + 1),
                MapOp.Prepare when value == 0 => value, // -ENOENT: freed since the caller read its PTE
                MapOp.Prepare => (ushort)(value | SwapHasCache),
                MapOp.Free when (value & CountMask) == 0 => throw Corrupt(caller, "Unused swap offset entry", entry, value),
                MapOp.Free => (ushort)(value - 1),
                _ when (value & SwapHasCache) == 0 => throw Corrupt(caller, "Unused swap offset entry", entry, value),
                _ => (ushort)(value & ~SwapHasCache),
            };
            if (next == value) return value; // swapcache_prepare on a free slot: nothing to change
            Volatile.Write(ref _map[offset], next);
            if (next == 0) SlotFreed(offset);
            return value;
        }
        finally
        {
            NativeSpinLock.Release(&ci->Lock);
        }
    }

    /// <summary>PTEs holding <paramref name="entry"/> (swap_swapcount); 0 for a free slot.</summary>
    internal int SwapCount(SwapEntry entry) => Volatile.Read(ref _map[CheckEntry(entry, "swap_count")]) & CountMask;

    /// <summary>Whether the slot's page is in the swap cache (SWAP_HAS_CACHE).</summary>
    internal bool HasCache(SwapEntry entry) => (Volatile.Read(ref _map[CheckEntry(entry, "swap_has_cache")]) & SwapHasCache) != 0;

    /// <summary>The slot of an entry of this device; throws for another device's entry or a slot outside 1..last_page.</summary>
    private uint CheckEntry(SwapEntry entry, string caller)
    {
        if (entry.Type != Type || entry.IsNone)
            throw new MemoryCorruptionException($"{caller}: Bad swap file entry {entry.Value:x8} (device {Path} is type {Type}).");
        if (entry.Offset == 0 || entry.Offset >= _maxPages)
            throw new MemoryCorruptionException($"{caller}: Bad swap offset entry {entry.Value:x8} (device {Path} has slots 1..{_maxPages - 1}).");
        return (uint)entry.Offset;
    }

    private MemoryCorruptionException Corrupt(string caller, string what, SwapEntry entry, ushort value)
        => new($"{caller}: {what} {entry.Value:x8} (device {Path}, slot {entry.Offset}, swap_map 0x{value:x4}).");
}
