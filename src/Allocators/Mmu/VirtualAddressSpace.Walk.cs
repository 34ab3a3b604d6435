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
        int level = VirtualAddress.PgdLevel;
        while (true)
        {
            ulong* slot = EntryOffset(table, va, level);
            ulong e = Volatile.Read(ref *slot);
            if ((e & P) == 0)
            {
                error = baseCode;
                return null;
            }
            rw &= e; us &= e; nx |= e & NX;
            slots[level] = slot;
            values[level] = e;
            if (!PointsToTable(e, level)) break;
            table = TableOf(e);
            if (table == null)
            {
                error = baseCode | PageFaultErrorCode.Protection | PageFaultErrorCode.ReservedBit;
                return null;
            }
            level++;
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
        ulong leafSpan = 1UL << VirtualAddress.LevelShift(level);
        byte* page = frame + VirtualAddress.PageAlignDown(va & (leafSpan - 1));
        if (fill && va >= _tlbCacheStart && va < _tlbCacheEnd && (!_userMode || us != 0))
        {
            ulong perms = ThreadTlb.Valid
                | (rw != 0 && (leaf & DirtyBit) != 0 ? ThreadTlb.Writable : 0)
                | (nx == 0 ? ThreadTlb.Executable : 0);
            ThreadTlb.Fill(tlb, va, perms, page);
        }
        error = 0;
        return page + VirtualAddress.PageOffsetOf(va);
    }

    /// <summary>
    /// The leaf entry that maps <paramref name="va"/> (a PTE, or a PMD with PSE for a huge mapping), or
    /// <see cref="PageTableEntry.None"/>. Reads only; no Accessed bit is set.
    /// </summary>
    public PageTableEntry GetPte(ulong va)
    {
        ThrowIfDisposed();
        if (!VirtualAddress.IsCanonical(va)) return default;
        ulong* slot = LookupSlot(va, VirtualAddress.PteLevel, out int level);
        if (slot == null) return default;
        ulong e = Volatile.Read(ref *slot);
        // A non-present PTE can still carry a swap or migration entry; a non-present upper entry maps nothing.
        return (e & P) != 0 || level == VirtualAddress.PteLevel ? new PageTableEntry(e) : default;
    }

    /// <summary>
    /// The entries a walk of <paramref name="va"/> meets, as the kernel's dump_pagetable prints them
    /// (<c>PGD %lx P4D %lx PUD %lx PMD %lx PTE %lx</c>, stopping after a non-present or leaf entry, each value followed
    /// by a space as pr_cont leaves it; P4D is folded into the PGD with 4-level paging, so it repeats the PGD value).
    /// </summary>
    public string DumpPageTable(ulong va)
    {
        ThrowIfDisposed();
        if (!VirtualAddress.IsCanonical(va)) return "non-canonical address";
        var sb = new StringBuilder();
        for (int level = VirtualAddress.PgdLevel; level <= VirtualAddress.PteLevel; level++)
        {
            ulong* slot = LookupSlot(va, level, out int reached);
            if (slot == null || reached != level) break;
            ulong e = Volatile.Read(ref *slot);
            sb.Append(s_levelNames[level]).Append(' ').Append(e.ToString("x"));
            if (level == VirtualAddress.PteLevel) break;
            sb.Append(' ');
            // With the P4D folded, p4d_offset returns the PGD slot: the kernel prints it again before checking it.
            if (level == VirtualAddress.PgdLevel) sb.Append("P4D ").Append(e.ToString("x")).Append(' ');
        }
        return sb.ToString();
    }

    private static readonly string[] s_levelNames = ["PGD", "PUD", "PMD", "PTE"];

    /// <summary>
    /// For tests: the slot of the entry at <paramref name="level"/> (0 PGD, 1 PUD, 2 PMD, 3 PTE) on the walk of
    /// <paramref name="va"/>, or null when an upper level is missing or a leaf.
    /// </summary>
    internal ulong* EntrySlotForTesting(ulong va, int level)
    {
        ulong* slot = LookupSlot(va, level, out int reached);
        return reached == level ? slot : null;
    }

    /// <summary>Pointer to the PTE slot for <paramref name="va"/> when every upper level is present and not huge; else null.</summary>
    private protected ulong* FindPteSlot(ulong va)
    {
        ulong* slot = LookupSlot(va, VirtualAddress.PteLevel, out int reached);
        return reached == VirtualAddress.PteLevel ? slot : null;
    }

    /// <summary>Pointer to the PMD slot for <paramref name="va"/> when the PGD and PUD entries are present; else null.</summary>
    private protected ulong* FindPmdSlot(ulong va)
    {
        ulong* slot = LookupSlot(va, VirtualAddress.PmdLevel, out int reached);
        return reached == VirtualAddress.PmdLevel ? slot : null;
    }

    /// <summary>
    /// The lookup walk every reader shares (pgd_offset, then pud/pmd/pte_offset while the entry points at a table):
    /// from the PGD towards <paramref name="targetLevel"/>, stopping early at a non-present entry or a huge leaf.
    /// Returns the slot where it stopped and that slot's level in <paramref name="level"/>; null when an entry points
    /// outside memory. Reads only, lock-free like <see cref="Walk"/>.
    /// </summary>
    private ulong* LookupSlot(ulong va, int targetLevel, out int level)
    {
        ulong* table = _pgd;
        for (level = VirtualAddress.PgdLevel; ; level++)
        {
            ulong* slot = EntryOffset(table, va, level);
            if (level == targetLevel) return slot;
            ulong e = Volatile.Read(ref *slot);
            if (!PointsToTable(e, level)) return slot;
            table = TableOf(e);
            if (table == null) return null;
        }
    }

    /// <summary>pgd_offset / pud_offset / pmd_offset / pte_offset: the slot of <paramref name="va"/>'s entry in <paramref name="table"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected static ulong* EntryOffset(ulong* table, ulong va, int level) => table + VirtualAddress.TableIndex(va, level);

    /// <summary>
    /// Whether an entry at <paramref name="level"/> leads to a lower table: present, above the PTE level and not a
    /// huge leaf (PSE in a PUD or PMD; the PGD has no PSE).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool PointsToTable(ulong e, int level)
        => (e & P) != 0 && level < VirtualAddress.PteLevel && (level == VirtualAddress.PgdLevel || (e & PSE) == 0);

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
            e = PageTableEntry.Make(page->Pfn, tableProt).Value;
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
    private protected static ulong* AlignToTable(ulong* slot) => (ulong*)VirtualAddress.PageAlignDown((nuint)slot);
}
