using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Allocators.Mmu;

/// <summary>
/// One 64-bit x86-64 page-table entry (pgd_t / pud_t / pmd_t / pte_t are all this layout), with the kernel's helpers
/// as methods: <c>mk_pte</c> is <see cref="Make"/>, <c>pte_pfn</c> is <see cref="Pfn"/>, <c>pte_mkdirty</c> is
/// <see cref="MkDirty"/>, <c>pte_wrprotect</c> is <see cref="WrProtect"/>, and so on. Immutable; every helper
/// returns a new value.
/// </summary>
public readonly struct PageTableEntry : IEquatable<PageTableEntry>
{
    /// <summary>Wraps a raw entry value.</summary>
    public PageTableEntry(ulong value) => Value = value;

    /// <summary>The raw 64-bit value as the walker reads it.</summary>
    public ulong Value { get; }

    /// <summary>The entry's bits as flags (the PFN shows up inside <see cref="PteFlags.PfnMask"/>).</summary>
    public PteFlags Flags => (PteFlags)Value;

    /// <summary>The empty entry (pte_none).</summary>
    public static PageTableEntry None => default;

    /// <summary>Builds an entry mapping page frame <paramref name="pfn"/> with <paramref name="prot"/> (mk_pte / pfn_pte).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The pfn does not fit in bits 12..51.</exception>
    public static PageTableEntry Make(ulong pfn, PteFlags prot)
    {
        if (pfn > (ulong)PteFlags.PfnMask >> VirtualAddress.PageShift) ThrowPfnTooLarge(pfn);
        return new PageTableEntry((pfn << VirtualAddress.PageShift) | ((ulong)prot & ~(ulong)PteFlags.PfnMask));
    }

    // Out of line: an inlined message would make every caller that builds entries zero a string builder's stack space.
    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowPfnTooLarge(ulong pfn)
        => throw new ArgumentOutOfRangeException(nameof(pfn), $"pfn 0x{pfn:x} does not fit in 40 bits.");

    /// <summary>True when the entry is zero (pte_none).</summary>
    public bool IsNone => Value == 0;

    /// <summary>Present bit (pte_present).</summary>
    public bool Present => (Value & (ulong)PteFlags.Present) != 0;

    /// <summary>RW bit (pte_write).</summary>
    public bool Writable => (Value & (ulong)PteFlags.ReadWrite) != 0;

    /// <summary>User bit.</summary>
    public bool User => (Value & (ulong)PteFlags.User) != 0;

    /// <summary>Accessed bit (pte_young).</summary>
    public bool Young => (Value & (ulong)PteFlags.Accessed) != 0;

    /// <summary>Dirty bit (pte_dirty).</summary>
    public bool Dirty => (Value & (ulong)PteFlags.Dirty) != 0;

    /// <summary>PSE bit in a PMD or PUD: a leaf (pmd_leaf / pmd_trans_huge).</summary>
    public bool Huge => (Value & (ulong)PteFlags.Huge) != 0;

    /// <summary>Global bit.</summary>
    public bool Global => (Value & (ulong)PteFlags.Global) != 0;

    /// <summary>Software "special" bit (pte_special).</summary>
    public bool Special => (Value & (ulong)PteFlags.Special) != 0;

    /// <summary>NX bit: no instruction fetch.</summary>
    public bool NoExecute => (Value & (ulong)PteFlags.NoExecute) != 0;

    /// <summary>The page frame number in bits 12..51 (pte_pfn).</summary>
    public ulong Pfn => PfnOf(Value);

    /// <summary>The page frame number of a raw entry of any level (pte_pfn, pmd_pfn, pud_pfn).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static ulong PfnOf(ulong entry) => (entry & (ulong)PteFlags.PfnMask) >> VirtualAddress.PageShift;

    /// <summary>The protection bits without the pfn (pte_pgprot).</summary>
    public PteFlags Protection => (PteFlags)(Value & ~(ulong)PteFlags.PfnMask);

    /// <summary>Sets Dirty (pte_mkdirty).</summary>
    public PageTableEntry MkDirty() => Set(PteFlags.Dirty);

    /// <summary>Clears Dirty (pte_mkclean).</summary>
    public PageTableEntry MkClean() => Clear(PteFlags.Dirty);

    /// <summary>Sets Accessed (pte_mkyoung).</summary>
    public PageTableEntry MkYoung() => Set(PteFlags.Accessed);

    /// <summary>Clears Accessed (pte_mkold).</summary>
    public PageTableEntry MkOld() => Clear(PteFlags.Accessed);

    /// <summary>Clears RW (pte_wrprotect).</summary>
    public PageTableEntry WrProtect() => Clear(PteFlags.ReadWrite);

    /// <summary>Sets RW (pte_mkwrite).</summary>
    public PageTableEntry MkWrite() => Set(PteFlags.ReadWrite);

    /// <summary>Sets PSE (pmd_mkhuge).</summary>
    public PageTableEntry MkHuge() => Set(PteFlags.Huge);

    /// <summary>Sets the special bit (pte_mkspecial).</summary>
    public PageTableEntry MkSpecial() => Set(PteFlags.Special);

    /// <summary>Clears NX (pte_mkexec).</summary>
    public PageTableEntry MkExec() => Clear(PteFlags.NoExecute);

    /// <summary>Keeps the pfn and the bits mprotect keeps, and takes the rest from <paramref name="prot"/> (pte_modify).</summary>
    public PageTableEntry Modify(PteFlags prot)
        => new((Value & (ulong)PteFlags.ChangeMask) | ((ulong)prot & ~(ulong)PteFlags.ChangeMask));

    /// <summary>This entry with <paramref name="flags"/> set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageTableEntry Set(PteFlags flags) => new(Value | (ulong)flags);

    /// <summary>This entry with <paramref name="flags"/> cleared.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageTableEntry Clear(PteFlags flags) => new(Value & ~(ulong)flags);

    /// <summary>True when every bit of <paramref name="flags"/> is set.</summary>
    public bool Has(PteFlags flags) => (Value & (ulong)flags) == (ulong)flags;

    /// <inheritdoc/>
    public bool Equals(PageTableEntry other) => Value == other.Value;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PageTableEntry e && e.Value == Value;

    /// <inheritdoc/>
    public override int GetHashCode() => Value.GetHashCode();

    /// <summary>Equality of the raw values.</summary>
    public static bool operator ==(PageTableEntry left, PageTableEntry right) => left.Value == right.Value;

    /// <summary>Inequality of the raw values.</summary>
    public static bool operator !=(PageTableEntry left, PageTableEntry right) => left.Value != right.Value;

    /// <summary>The raw value in hex, as the kernel prints it (<c>%lx</c>).</summary>
    public override string ToString() => Value.ToString("x");
}
