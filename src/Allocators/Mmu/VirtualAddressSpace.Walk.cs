using System.Runtime.CompilerServices;
using System.Text;

namespace Allocators.Mmu;

public abstract unsafe partial class VirtualAddressSpace
{
    private const ulong P = (ulong)PteFlags.Present;
    private const ulong RW = (ulong)PteFlags.ReadWrite;
    private const ulong US = (ulong)PteFlags.User;
    private const ulong PSE = (ulong)PteFlags.Huge;
    private const ulong NX = (ulong)PteFlags.NoExecute;
    private const ulong AccessedBit = (ulong)PteFlags.Accessed;
    private const ulong DirtyBit = (ulong)PteFlags.Dirty;

    /// <summary>
    /// The hardware page walk: PGD, PUD, PMD (a 2 MiB leaf when PSE is set), PTE. Checks Present at every level and
    /// RW, User and NX accumulated over all levels; sets Accessed in every entry used and Dirty in the leaf on a write,
    /// with compare-and-swap so that a concurrent change of an entry restarts the walk. Lock-free: callers are inside
    /// an access region (see the TLB), which keeps page-table pages from being freed under the walk.
    /// On success fills the TLB (when <paramref name="fill"/>) and returns the host address of the byte at
    /// <paramref name="va"/>; on failure returns null with the x86 error code.
    /// </summary>
    private byte* Walk(ulong va, MemoryAccess access, bool user, ThreadTlb* tlb, bool fill, out PageFaultErrorCode error)
    {
        ulong** slots = stackalloc ulong*[4];
        ulong* values = stackalloc ulong[4];
        bool write = access == MemoryAccess.Write;
        PageFaultErrorCode baseCode = (write ? PageFaultErrorCode.Write : 0)
            | (user ? PageFaultErrorCode.User : 0)
            | (access == MemoryAccess.Execute ? PageFaultErrorCode.InstructionFetch : 0);
    restart:
        ulong* table = _pgd;
        ulong rw = RW, us = US, nx = 0;
        int level = 0;
        int shift = 39;
        ulong e;
        while (true)
        {
            ulong* slot = table + ((va >> shift) & 511);
            e = Volatile.Read(ref *slot);
            if ((e & P) == 0)
            {
                error = baseCode;
                return null;
            }
            rw &= e; us &= e; nx |= e & NX;
            slots[level] = slot;
            values[level] = e;
            if (level == 3 || (level >= 1 && (e & PSE) != 0)) break;
            table = TableOf(e);
            if (table == null)
            {
                error = baseCode | PageFaultErrorCode.Protection | PageFaultErrorCode.ReservedBit;
                return null;
            }
            level++;
            shift -= 9;
        }

        if ((user && us == 0) || (write && rw == 0) || (access == MemoryAccess.Execute && nx != 0))
        {
            error = baseCode | PageFaultErrorCode.Protection;
            return null;
        }

        for (int i = 0; i <= level; i++)
        {
            ulong want = values[i] | AccessedBit | (i == level && write ? DirtyBit : 0);
            if (want != values[i] && Interlocked.CompareExchange(ref *slots[i], want, values[i]) != values[i]) goto restart;
            values[i] = want;
        }

        ulong leaf = values[level];
        byte* frame = PfnToHost(PageTableEntry.PfnOf(leaf));
        if (frame == null)
        {
            error = baseCode | PageFaultErrorCode.Protection | PageFaultErrorCode.ReservedBit;
            return null;
        }
        // Offset of the 4 KiB page inside a 2 MiB / 1 GiB leaf.
        ulong leafSpan = 1UL << shift;
        byte* page = frame + ((va & (leafSpan - 1)) & ~0xFFFUL);
        if (fill && va >= _tlbCacheStart && va < _tlbCacheEnd && (!_userMode || us != 0))
        {
            ulong perms = ThreadTlb.Valid
                | (rw != 0 && (leaf & DirtyBit) != 0 ? ThreadTlb.Writable : 0)
                | (nx == 0 ? ThreadTlb.Executable : 0);
            ThreadTlb.Fill(tlb, va, perms, page);
        }
        error = 0;
        return page + (va & 0xFFF);
    }

    /// <summary>
    /// The leaf entry that maps <paramref name="va"/> (a PTE, or a PMD with PSE for a huge mapping), or
    /// <see cref="PageTableEntry.None"/>. Reads only; no Accessed bit is set.
    /// </summary>
    public PageTableEntry GetPte(ulong va)
    {
        ThrowIfDisposed();
        if (!VirtualAddress.IsCanonical(va)) return default;
        ulong* table = _pgd;
        int shift = 39;
        for (int level = 0; ; level++, shift -= 9)
        {
            ulong e = Volatile.Read(ref table[(va >> shift) & 511]);
            if ((e & P) == 0) return level == 3 ? new PageTableEntry(e) : default;
            if (level == 3 || (level >= 1 && (e & PSE) != 0)) return new PageTableEntry(e);
            table = TableOf(e);
            if (table == null) return default;
        }
    }

    /// <summary>
    /// The entries a walk of <paramref name="va"/> meets, as the kernel's dump_pagetable prints them
    /// (<c>PGD %lx P4D %lx PUD %lx PMD %lx PTE %lx</c>, stopping after a non-present or leaf entry, each value followed
    /// by a space as pr_cont leaves it; P4D is folded into the PGD with 4-level paging, so it repeats the PGD value).
    /// </summary>
    public string DumpPageTable(ulong va)
    {
        ThrowIfDisposed();
        var sb = new StringBuilder();
        if (!VirtualAddress.IsCanonical(va)) return "non-canonical address";
        ulong pgd = Volatile.Read(ref _pgd[VirtualAddress.PgdIndex(va)]);
        // With the P4D folded, pgd_present() is always true: the kernel prints PGD and P4D, then checks the P4D.
        sb.Append("PGD ").Append(pgd.ToString("x")).Append(' ');
        sb.Append("P4D ").Append(pgd.ToString("x")).Append(' ');
        if ((pgd & P) == 0) return sb.ToString();
        ulong pud = Volatile.Read(ref TableOf(pgd)[VirtualAddress.PudIndex(va)]);
        sb.Append("PUD ").Append(pud.ToString("x")).Append(' ');
        if ((pud & P) == 0 || (pud & PSE) != 0) return sb.ToString();
        ulong pmd = Volatile.Read(ref TableOf(pud)[VirtualAddress.PmdIndex(va)]);
        sb.Append("PMD ").Append(pmd.ToString("x")).Append(' ');
        if ((pmd & P) == 0 || (pmd & PSE) != 0) return sb.ToString();
        ulong pte = Volatile.Read(ref TableOf(pmd)[VirtualAddress.PteIndex(va)]);
        sb.Append("PTE ").Append(pte.ToString("x"));
        return sb.ToString();
    }

    /// <summary>
    /// For tests: the slot of the entry at <paramref name="level"/> (0 PGD, 1 PUD, 2 PMD, 3 PTE) on the walk of
    /// <paramref name="va"/>, or null when an upper level is missing or a leaf.
    /// </summary>
    internal ulong* EntrySlotForTesting(ulong va, int level)
    {
        ulong* table = _pgd;
        for (int l = 0, shift = 39; ; l++, shift -= 9)
        {
            ulong* slot = table + ((va >> shift) & 511);
            if (l == level) return slot;
            ulong e = Volatile.Read(ref *slot);
            if ((e & P) == 0 || (l >= 1 && (e & PSE) != 0)) return null;
            table = TableOf(e);
        }
    }

    /// <summary>Pointer to the PTE slot for <paramref name="va"/> when every upper level is present and not huge; else null.</summary>
    private protected ulong* FindPteSlot(ulong va)
    {
        ulong pgd = Volatile.Read(ref _pgd[VirtualAddress.PgdIndex(va)]);
        if ((pgd & P) == 0) return null;
        ulong pud = Volatile.Read(ref TableOf(pgd)[VirtualAddress.PudIndex(va)]);
        if ((pud & P) == 0 || (pud & PSE) != 0) return null;
        ulong pmd = Volatile.Read(ref TableOf(pud)[VirtualAddress.PmdIndex(va)]);
        if ((pmd & P) == 0 || (pmd & PSE) != 0) return null;
        return TableOf(pmd) + VirtualAddress.PteIndex(va);
    }

    /// <summary>Pointer to the PMD slot for <paramref name="va"/> when the PGD and PUD entries are present; else null.</summary>
    private protected ulong* FindPmdSlot(ulong va)
    {
        ulong pgd = Volatile.Read(ref _pgd[VirtualAddress.PgdIndex(va)]);
        if ((pgd & P) == 0) return null;
        ulong pud = Volatile.Read(ref TableOf(pgd)[VirtualAddress.PudIndex(va)]);
        if ((pud & P) == 0 || (pud & PSE) != 0) return null;
        return TableOf(pud) + VirtualAddress.PmdIndex(va);
    }

    /// <summary>
    /// Under the page-table lock: the slot in the table below <paramref name="slot"/>, allocating that table when the
    /// entry is empty (pud_alloc / pmd_alloc / pte_alloc). Returns null when out of memory.
    /// </summary>
    private protected ulong* AllocLowerTable(ulong* slot, int index, PteFlags tableProt)
    {
        ulong e = *slot;
        if ((e & P) == 0)
        {
            var page = AllocTablePage();
            if (page == null) return null;
            e = ((ulong)page->Pfn << 12) | (ulong)tableProt;
            Volatile.Write(ref *slot, e); // the zeroed table is visible before the entry that points at it
            TablePage(AlignToTable(slot))->Data0++;
        }
        return TableOf(e) + index;
    }

    /// <summary>
    /// Under the page-table lock: the PMD slot of <paramref name="va"/>, allocating the PUD and PMD tables on the way
    /// (pud_alloc, pmd_alloc). Null when out of memory; tables made before that stay, empty, as in the kernel.
    /// </summary>
    private protected ulong* AllocPmdSlot(ulong va, PteFlags tableProt)
    {
        ulong* pud = AllocLowerTable(_pgd + VirtualAddress.PgdIndex(va), VirtualAddress.PudIndex(va), tableProt);
        return pud == null ? null : AllocLowerTable(pud, VirtualAddress.PmdIndex(va), tableProt);
    }

    /// <summary>
    /// Under the page-table lock: the PTE slot of <paramref name="va"/>, allocating every table on the way (pte_alloc).
    /// The PMD entry must not be a huge one. Null when out of memory.
    /// </summary>
    private protected ulong* AllocPteSlot(ulong va, PteFlags tableProt)
    {
        ulong* pmd = AllocPmdSlot(va, tableProt);
        return pmd == null ? null : AllocLowerTable(pmd, VirtualAddress.PteIndex(va), tableProt);
    }

    /// <summary>The table that holds an entry slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected static ulong* AlignToTable(ulong* slot) => (ulong*)((nuint)slot & ~(nuint)0xFFF);
}
