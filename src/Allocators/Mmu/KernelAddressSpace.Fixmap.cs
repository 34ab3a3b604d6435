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

    // kmap_local slot groups. A thread keeps its group between maps (so a map at depth 0 costs one uncontended
    // compare-and-swap on the group's own cache line) and marks it idle while it holds no local kmap; a thread that
    // finds no free group takes an idle one. State per group, one cache line each: GroupFree, GroupIdle (owned, no
    // mapping, TLB entries cleared), GroupActive (owned, mapping). Waiters for a group sleep on _kmapGroupWait.
    private const int GroupFree = 0, GroupIdle = 1, GroupActive = 2;
    private const int GroupStride = 16; // ints per cache line
    private readonly int[] _kmapGroupState = new int[Fixmap.KmapGroups * GroupStride];
    private readonly object _kmapGroupWait = new();

    /// <summary>The calling thread's local kmap stack (per task in the kernel). Gives its slot group back when the thread is gone.</summary>
    private sealed class KmapStack
    {
        public KernelAddressSpace? Owner;
        public int Group = -1;
        public int Depth;
        public int AtomicDepth;
        public readonly ulong[] Addresses = new ulong[Fixmap.KmapSlotsPerThread];

        ~KmapStack()
        {
            // The thread exited (its [ThreadStatic] reference died with it): an idle group it still owns is free again.
            if (Group >= 0 && Owner is { IsDisposed: false } owner) owner.FreeIdleGroup(Group);
        }
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

    private ulong KmapLocalCore(PageFrame* page, bool atomic)
    {
        ThrowIfDisposed();
        _memory.ThrowIfNotFrame(page, atomic ? "kmap_atomic" : "kmap_local_page");
        KmapStack stack = t_kmap ??= new KmapStack();
        if (stack.Owner != this)
        {
            if (stack.Depth != 0)
                throw new InvalidOperationException("kmap_local: this thread holds local kmaps of another kernel address space; unmap them first.");
            if (stack.Group >= 0 && stack.Owner is { IsDisposed: false } previous) previous.FreeIdleGroup(stack.Group);
            stack.Group = -1;
            stack.Owner = this;
            stack.AtomicDepth = 0;
        }
        ulong pfn = page->Pfn;
        if (pfn < _lowPfnEnd)
        {
            if (atomic) stack.AtomicDepth++;
            return VirtualAddress.PageOffset + (pfn << VirtualAddress.PageShift);
        }
        if (stack.Depth == Fixmap.KmapSlotsPerThread)
            throw new InvalidOperationException($"kmap_local: the thread already holds {Fixmap.KmapSlotsPerThread} local kmaps (KM_MAX_IDX).");
        if (stack.Depth == 0) ActivateGroup(stack);
        int index = Fixmap.KmapBegin + stack.Group * Fixmap.KmapSlotsPerThread + stack.Depth;
        ulong va = Fixmap.ToVirt(index);
        // The slot was cleared and flushed from this thread's TLB by the unmap that freed it; no other thread uses it.
        Volatile.Write(ref *_fixmapPte[index], PageTableEntry.Make(pfn, PteFlags.PageKernel).Value);
        PrefillLocal(va, (byte*)_memory.PfnToVirt(pfn), writable: true);
        stack.Addresses[stack.Depth++] = va;
        if (atomic) stack.AtomicDepth++;
        return va;
    }

    private void KunmapLocalCore(ulong va, bool atomic)
    {
        KmapStack? stack = t_kmap;
        string name = atomic ? "kunmap_atomic" : "kunmap_local";
        if (stack == null || stack.Owner != this)
            throw new InvalidOperationException($"{name}: 0x{va:x} was not mapped by this thread.");
        if (atomic && stack.AtomicDepth == 0)
            throw new InvalidOperationException($"{name}: 0x{va:x}: the thread is not in an atomic kmap.");
        if (va >= VirtualAddress.PageOffset && va < HighMemory)
        {
            // A low page's direct-map address: no slot to give back.
            if (atomic) stack.AtomicDepth--;
            return;
        }
        ulong page = va & ~VirtualAddress.PageOffsetMask;
        if (stack.Depth == 0 || stack.Addresses[stack.Depth - 1] != page)
        {
            string top = stack.Depth == 0 ? "none" : $"0x{stack.Addresses[stack.Depth - 1]:x}";
            throw new InvalidOperationException($"{name}: 0x{va:x} is not the most recent local kmap of this thread (the top is {top}); local kmaps are undone in reverse order.");
        }
        int index = Fixmap.FromVirt(page);
        Volatile.Write(ref *_fixmapPte[index], 0UL);
        FlushLocalPage(page);
        stack.Depth--;
        if (atomic) stack.AtomicDepth--;
        if (stack.Depth == 0) Volatile.Write(ref _kmapGroupState[stack.Group * GroupStride], GroupIdle);
    }

    /// <summary>Makes the thread's group active for its first local kmap: its own idle group back, or another one.</summary>
    private void ActivateGroup(KmapStack stack)
    {
        if (stack.Group >= 0 && Interlocked.CompareExchange(ref _kmapGroupState[stack.Group * GroupStride], GroupActive, GroupIdle) == GroupIdle) return;
        stack.Group = AcquireKmapGroup(); // none, or taken while idle by a thread that found no free one
    }

    /// <summary>A free group, else an idle one; sleeps while every group is active.</summary>
    private int AcquireKmapGroup()
    {
        while (true)
        {
            for (int want = GroupFree; want <= GroupIdle; want++)
            {
                for (int g = 0; g < Fixmap.KmapGroups; g++)
                {
                    ref int state = ref _kmapGroupState[g * GroupStride];
                    if (Volatile.Read(ref state) == want && Interlocked.CompareExchange(ref state, GroupActive, want) == want) return g;
                }
            }
            lock (_kmapGroupWait) Monitor.Wait(_kmapGroupWait, 1); // every group maps something: wait for an unmap
        }
    }

    /// <summary>An exited thread's group, if still idle, becomes free.</summary>
    private void FreeIdleGroup(int group)
        => Interlocked.CompareExchange(ref _kmapGroupState[group * GroupStride], GroupFree, GroupIdle);

    /// <summary>might_sleep(): reports a sleeping call made inside an atomic kmap on this thread.</summary>
    private void MightSleep(string function)
    {
        if (InAtomic)
            throw new InvalidOperationException($"BUG: sleeping function called from invalid context: {function} inside kmap_atomic (in_atomic(): 1).");
    }
}
