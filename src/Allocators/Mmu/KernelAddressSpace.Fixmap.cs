using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Physical;

namespace Allocators.Mmu;

/// <summary>
/// The fixmap: compile-time-indexed kernel pages just below the vsyscall page, growing down (fix_to_virt(i) =
/// <see cref="Top"/> - i pages). Indices <see cref="KmapBegin"/>..<see cref="KmapEnd"/> are the kmap_local slots
/// (<see cref="KmapSlotsPerThread"/> per slot group; a thread holds one group while it has a local kmap); the rest
/// from <see cref="FirstFree"/> are for <see cref="KernelAddressSpace.SetFixmap"/>.
/// </summary>
public static class Fixmap
{
    /// <summary>FIXADDR_TOP: the address of index 0, the page just below the vsyscall page (0xffffffffff600000).</summary>
    public const ulong Top = 0xFFFF_FFFF_FF5F_F000UL;

    /// <summary>KM_MAX_IDX: how deep one thread's kmap_local/kmap_atomic stack goes.</summary>
    public const int KmapSlotsPerThread = 16;

    /// <summary>Slot groups: threads holding a local kmap at the same time (the kernel has one per CPU).</summary>
    public const int KmapGroups = 64;

    /// <summary>FIX_HOLE: index 0 is never mapped.</summary>
    public const int Hole = 0;

    /// <summary>FIX_KMAP_BEGIN.</summary>
    public const int KmapBegin = 1;

    /// <summary>FIX_KMAP_END.</summary>
    public const int KmapEnd = KmapBegin + KmapSlotsPerThread * KmapGroups - 1;

    /// <summary>The first index for general use (<see cref="KernelAddressSpace.SetFixmap"/>).</summary>
    public const int FirstFree = KmapEnd + 1;

    /// <summary>__end_of_fixed_addresses.</summary>
    public const int Count = FirstFree + 16;

    /// <summary>FIXADDR_START: the lowest fixmap address.</summary>
    public const ulong Start = Top - ((ulong)(Count - 1) << VirtualAddress.PageShift);

    /// <summary>fix_to_virt.</summary>
    public static ulong ToVirt(int index)
    {
        if ((uint)index >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"fixmap indices are 0..{Count - 1}.");
        return Top - ((ulong)index << VirtualAddress.PageShift);
    }

    /// <summary>virt_to_fix.</summary>
    public static int FromVirt(ulong va)
    {
        if (va > Top || va < Start) throw new ArgumentOutOfRangeException(nameof(va), $"0x{va:x} is not a fixmap address.");
        return (int)((Top - (va & ~VirtualAddress.PageOffsetMask)) >> VirtualAddress.PageShift);
    }
}

public sealed unsafe partial class KernelAddressSpace
{
    // One PTE slot pointer per fixmap index; the tables are made at construction (the kernel's level1_fixmap_pgt).
    private ulong** _fixmapPte;

    // kmap_local slot groups, one per thread that maps high pages (the kernel has one per CPU). A thread keeps its
    // group between maps, and its maps and unmaps take no atomic: the group's owner is a reference in _kmapGroupOwner
    // (null: free), changed only by compare-and-swap; the owner's Busy (its own field, which no other thread writes) is 1
    // while it holds a local kmap. A thread that finds no free group takes one whose owner is not Busy (an idle thread,
    // or one that exited) by the asymmetric Dekker protocol of ThreadCacheHeader: it claims the group's Drain word,
    // runs a process-wide barrier, then swaps the owner only if the owner's Busy is still 0; the owner's first map
    // sets Busy and then re-reads Drain and the owner, so of the two exactly one uses the group.
    // Invariant: a group's slots hold PTEs only while its owner's Busy is 1, and only that owner writes them.
    private readonly KmapStack?[] _kmapGroupOwner = new KmapStack?[Fixmap.KmapGroups];
    private const int DrainStride = 16; // ints per cache line
    private readonly int[] _kmapGroupDrain = new int[Fixmap.KmapGroups * DrainStride];
    private readonly object _kmapGroupWait = new();

    /// <summary>The calling thread's local kmap stack (per task in the kernel).</summary>
    private sealed unsafe class KmapStack
    {
        public KernelAddressSpace? Owner;
        public int Group = -1;
        public int Busy;         // 1 while the thread holds a local kmap in Owner (written by the thread only)
        public ThreadTlb* Tlb;   // this thread's TLB in Owner, taken once (the maps prefill it, the unmaps clear it)
        public int Depth;
        public int AtomicDepth;
        public readonly ulong[] Addresses = new ulong[Fixmap.KmapSlotsPerThread];
    }

    [ThreadStatic] private static KmapStack? t_kmap;

    private void SetUpFixmap()
    {
        _fixmapPte = (ulong**)NativeMemory.AllocZeroed((nuint)Fixmap.Count, (nuint)sizeof(nint));
        lock (_ptl)
        {
            for (int i = 0; i < Fixmap.Count; i++)
            {
                ulong* slot = AllocPteSlot(Fixmap.ToVirt(i), PteFlags.KernelPageTable);
                if (slot == null) throw new OutOfMemoryException("fixmap: no memory for its page table.");
                _fixmapPte[i] = slot;
            }
        }
    }

    private void FreeFixmap()
    {
        if (_fixmapPte != null) NativeMemory.Free(_fixmapPte);
        _fixmapPte = null;
    }

    /// <summary>set_fixmap: maps <paramref name="page"/> at fixmap index <paramref name="index"/> (from <see cref="Fixmap.FirstFree"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The index is a kmap slot, the hole, or beyond the fixmap.</exception>
    public void SetFixmap(int index, PageFrame* page, PteFlags prot)
    {
        ThrowIfDisposed();
        if (index < Fixmap.FirstFree || index >= Fixmap.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"set_fixmap: indices {Fixmap.FirstFree}..{Fixmap.Count - 1} are for general use.");
        _memory.ThrowIfNotFrame(page, "set_fixmap");
        if ((prot & PteFlags.Present) == 0 || (prot & PteFlags.User) != 0)
            throw new ArgumentException($"set_fixmap: protection {prot} must be present and supervisor-only.", nameof(prot));
        ulong va = Fixmap.ToVirt(index);
        ulong old = Interlocked.Exchange(ref *_fixmapPte[index], PageTableEntry.Make(page->Pfn, prot).Value);
        if (old != 0) Flush(va, va + VirtualAddress.PageSize, waitForAccesses: true);
    }

    /// <summary>clear_fixmap: unmaps a general-use fixmap index and flushes it from every thread.</summary>
    public void ClearFixmap(int index)
    {
        ThrowIfDisposed();
        if (index < Fixmap.FirstFree || index >= Fixmap.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"clear_fixmap: indices {Fixmap.FirstFree}..{Fixmap.Count - 1} are for general use.");
        ulong va = Fixmap.ToVirt(index);
        if (Interlocked.Exchange(ref *_fixmapPte[index], 0UL) != 0) Flush(va, va + VirtualAddress.PageSize, waitForAccesses: true);
    }

    /// <summary>
    /// kmap_local_page: a kernel address for <paramref name="page"/> valid on this thread until the matching
    /// <see cref="KunmapLocal"/>. A low page returns its direct-map address and takes no slot; a high page gets the
    /// next slot of the thread's stack (<see cref="Fixmap.KmapSlotsPerThread"/> deep). Unmap in reverse order.
    /// </summary>
    /// <exception cref="InvalidOperationException">The thread's stack is full.</exception>
    public ulong KmapLocal(PageFrame* page) => KmapLocalCore(page, atomic: false);

    /// <summary>
    /// kmap_atomic: <see cref="KmapLocal"/> in atomic context — until the matching <see cref="KunmapAtomic"/> the thread
    /// may not sleep; a sleeping call such as <see cref="Kmap"/> is reported as the kernel's "BUG: sleeping function
    /// called from invalid context".
    /// </summary>
    public ulong KmapAtomic(PageFrame* page) => KmapLocalCore(page, atomic: true);

    /// <summary>kunmap_local: undoes the most recent <see cref="KmapLocal"/> of this thread, whose address <paramref name="va"/> is.</summary>
    /// <exception cref="InvalidOperationException"><paramref name="va"/> is not the thread's most recent local kmap; nothing changes.</exception>
    public void KunmapLocal(ulong va) => KunmapLocalCore(va, atomic: false);

    /// <summary>kunmap_atomic: undoes the most recent <see cref="KmapAtomic"/>.</summary>
    /// <exception cref="InvalidOperationException"><paramref name="va"/> is not the thread's most recent atomic kmap; nothing changes.</exception>
    public void KunmapAtomic(ulong va) => KunmapLocalCore(va, atomic: true);

    /// <summary>True while the calling thread is inside a <see cref="KmapAtomic"/> (in_atomic()).</summary>
    public bool InAtomic => t_kmap is { } s && s.Owner == this && s.AtomicDepth > 0;

    // The map and unmap paths keep their throws in helpers: a message built inline makes the JIT zero a string
    // builder's stack space on every call.
    private ulong KmapLocalCore(PageFrame* page, bool atomic)
    {
        ThrowIfDisposed();
        _memory.ThrowIfNotFrame(page, atomic ? "kmap_atomic" : "kmap_local_page");
        KmapStack? stack = t_kmap;
        if (stack == null || stack.Owner != this) stack = BindKmapStack(stack);
        ulong pfn = page->Pfn;
        if (pfn < _lowPfnEnd)
        {
            if (atomic) stack.AtomicDepth++;
            return VirtualAddress.PageOffset + (pfn << VirtualAddress.PageShift);
        }
        int depth = stack.Depth;
        if ((uint)depth >= Fixmap.KmapSlotsPerThread) ThrowKmapStackFull();
        if (depth == 0) EnterGroup(stack);
        int index = Fixmap.KmapBegin + stack.Group * Fixmap.KmapSlotsPerThread + depth;
        ulong va = Fixmap.Top - ((ulong)index << VirtualAddress.PageShift);
        // The slot was cleared and flushed from this thread's TLB by the unmap that freed it; no other thread uses it.
        Volatile.Write(ref *_fixmapPte[index], PageTableEntry.Make(pfn, PteFlags.PageKernel).Value);
        PrefillLocal(stack.Tlb, va, _memory.AddressOf(page), writable: true);
        stack.Addresses[depth] = va;
        stack.Depth = depth + 1;
        if (atomic) stack.AtomicDepth++;
        return va;
    }

    /// <summary>Makes the calling thread's stack this space's (it must hold no local kmap of another).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private KmapStack BindKmapStack(KmapStack? stack)
    {
        stack ??= t_kmap = new KmapStack();
        if (stack.Depth != 0)
            throw new InvalidOperationException("kmap_local: this thread holds local kmaps of another kernel address space; unmap them first.");
        if (stack.Group >= 0 && stack.Owner is { } previous) Interlocked.CompareExchange(ref previous._kmapGroupOwner[stack.Group], null, stack);
        stack.Group = -1;
        stack.Tlb = CurrentTlb();
        stack.Owner = this;
        stack.AtomicDepth = 0;
        return stack;
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowKmapStackFull()
        => throw new InvalidOperationException($"kmap_local: the thread already holds {Fixmap.KmapSlotsPerThread} local kmaps (KM_MAX_IDX).");

    private void KunmapLocalCore(ulong va, bool atomic)
    {
        KmapStack? stack = t_kmap;
        if (stack == null || stack.Owner != this || (atomic && stack.AtomicDepth == 0)) ThrowNotMapped(stack, va, atomic);
        if (va >= VirtualAddress.PageOffset && va < HighMemory)
        {
            // A low page's direct-map address: no slot to give back.
            if (atomic) stack.AtomicDepth--;
            return;
        }
        ulong page = va & ~VirtualAddress.PageOffsetMask;
        int depth = stack.Depth - 1;
        if ((uint)depth >= Fixmap.KmapSlotsPerThread || stack.Addresses[depth] != page) ThrowNotTop(stack, va, atomic);
        int index = Fixmap.KmapBegin + stack.Group * Fixmap.KmapSlotsPerThread + depth;
        Volatile.Write(ref *_fixmapPte[index], 0UL);
        ThreadTlb.ClearPage(stack.Tlb, page);
        stack.Depth = depth;
        if (atomic) stack.AtomicDepth--;
        if (depth == 0) Volatile.Write(ref stack.Busy, 0);
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotMapped(KmapStack? stack, ulong va, bool atomic)
    {
        string name = atomic ? "kunmap_atomic" : "kunmap_local";
        if (stack == null || stack.Owner != this)
            throw new InvalidOperationException($"{name}: 0x{va:x} was not mapped by this thread.");
        throw new InvalidOperationException($"{name}: 0x{va:x}: the thread is not in an atomic kmap.");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotTop(KmapStack stack, ulong va, bool atomic)
    {
        string top = stack.Depth == 0 ? "none" : $"0x{stack.Addresses[stack.Depth - 1]:x}";
        throw new InvalidOperationException($"{(atomic ? "kunmap_atomic" : "kunmap_local")}: 0x{va:x} is not the most recent local kmap of this thread (the top is {top}); local kmaps are undone in reverse order.");
    }

    /// <summary>The first map of a run: Busy set, then the thread's group still its own, or another group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EnterGroup(KmapStack stack)
    {
        int g = stack.Group;
        if (g < 0 || !Entered(stack, g)) AcquireKmapGroup(stack);
    }

    /// <summary>
    /// Gives the thread a group (its Busy set): a free one, else one whose owner holds no local kmap, else it sleeps
    /// until an owner unmaps or exits.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AcquireKmapGroup(KmapStack stack)
    {
        // The stack is not Busy and has no group here (EnterGroup's failed Entered left it so).
        while (true)
        {
            ThrowIfDisposed();
            for (int g = 0; g < Fixmap.KmapGroups; g++)
            {
                if (Volatile.Read(ref _kmapGroupOwner[g]) == null && Interlocked.CompareExchange(ref _kmapGroupOwner[g], stack, null) == null
                    && Entered(stack, g))
                    return;
            }
            for (int g = 0; g < Fixmap.KmapGroups; g++)
            {
                if (Volatile.Read(ref _kmapGroupOwner[g]) is not { } owner || Volatile.Read(ref owner.Busy) != 0) continue;
                ref int drain = ref _kmapGroupDrain[g * DrainStride];
                if (Interlocked.CompareExchange(ref drain, 1, 0) != 0) continue;
                Interlocked.MemoryBarrierProcessWide();
                bool taken = Volatile.Read(ref owner.Busy) == 0 && Interlocked.CompareExchange(ref _kmapGroupOwner[g], stack, owner) == owner;
                Volatile.Write(ref drain, 0);
                if (taken && Entered(stack, g)) return;
            }
            lock (_kmapGroupWait) Monitor.Wait(_kmapGroupWait, 1); // every group maps something: wait for an unmap
        }
    }

    /// <summary>
    /// The thread enters group <paramref name="g"/>: Busy set, then true if the group is still its own (no taker got in
    /// first); otherwise Busy cleared, no group, false.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Entered(KmapStack stack, int g)
    {
        stack.Group = g;
        Volatile.Write(ref stack.Busy, 1);
        if (Volatile.Read(ref _kmapGroupDrain[g * DrainStride]) == 0 && ReferenceEquals(Volatile.Read(ref _kmapGroupOwner[g]), stack)) return true;
        Volatile.Write(ref stack.Busy, 0);
        stack.Group = -1;
        return false;
    }

    /// <summary>might_sleep(): reports a sleeping call made inside an atomic kmap on this thread.</summary>
    private void MightSleep(string function)
    {
        if (InAtomic)
            throw new InvalidOperationException($"BUG: sleeping function called from invalid context: {function} inside kmap_atomic (in_atomic(): 1).");
    }
}
