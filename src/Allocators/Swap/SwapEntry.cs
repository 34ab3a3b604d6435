using System.Runtime.CompilerServices;

namespace Allocators.Swap;

/// <summary>
/// A swap entry (swp_entry_t): which swap device (<see cref="Type"/>) and which page slot on it (<see cref="Offset"/>).
/// The default value is "none" (type 0, offset 0: slot 0 of every device holds the swap header and is never handed out).
/// <see cref="ToPte"/>/<see cref="FromPte"/> are the x86-64 swap PTE encoding in its L1TF-safe form (Linux 4.18+,
/// arch/x86/include/asm/pgtable_64.h): Present (bit 0) and PROTNONE (bit 8) clear, the type in bits 59-63 and the offset
/// stored inverted in bits 9-58, so that a not-present PTE never points a speculative load at real memory (the high
/// physical-address bits of the inverted offset are set).
/// </summary>
public readonly struct SwapEntry : IEquatable<SwapEntry>
{
    /// <summary>MAX_SWAPFILES: swap devices a system can have (5 type bits).</summary>
    public const int MaxSwapFiles = 32;

    /// <summary>Bits of the offset in a swap PTE (bits 9-58).</summary>
    public const int OffsetBits = 50;

    /// <summary>Largest offset a swap PTE can hold.</summary>
    public const ulong MaxOffset = (1ul << OffsetBits) - 1;

    private const int TypeBits = 5;                        // SWP_TYPE_BITS
    private const int OffsetFirstBit = 9;                  // SWP_OFFSET_FIRST_BIT = _PAGE_BIT_PROTNONE + 1
    private const int OffsetShift = OffsetFirstBit + TypeBits; // SWP_OFFSET_SHIFT
    private const int ValueTypeShift = 58;                 // SWP_TYPE_SHIFT of the arch-independent swp_entry_t
    private const ulong Present = 1ul << 0;
    private const ulong ProtNone = 1ul << 8;
    private const ulong FlagMask = (ulong)(SwapPteFlags.SoftDirty | SwapPteFlags.UffdWp | SwapPteFlags.Exclusive);

    private readonly ulong _value; // the arch-independent swp_entry_t: type << 58 | offset

    /// <summary>Creates the entry for slot <paramref name="offset"/> of swap device <paramref name="type"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The type is not 0..31 or the offset does not fit in 50 bits.</exception>
    public SwapEntry(int type, ulong offset)
    {
        if ((uint)type >= MaxSwapFiles)
            throw new ArgumentOutOfRangeException(nameof(type), type, $"A swap type is 0..{MaxSwapFiles - 1} (MAX_SWAPFILES {MaxSwapFiles}).");
        if (offset > MaxOffset)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"A swap offset fits in {OffsetBits} bits (at most 0x{MaxOffset:x}).");
        _value = (ulong)type << ValueTypeShift | offset;
    }

    private SwapEntry(ulong value) => _value = value;

    /// <summary>The swap device's index in the swap table (swp_type).</summary>
    public int Type => (int)(_value >> ValueTypeShift);

    /// <summary>The page slot on the device (swp_offset); slot n is the file's page n.</summary>
    public ulong Offset => _value & MaxOffset;

    /// <summary>No entry (the default value).</summary>
    public bool IsNone => _value == 0;

    /// <summary>The kernel's swp_entry_t value (type &lt;&lt; 58 | offset), as its messages print it.</summary>
    internal ulong Value => _value;

    /// <summary>
    /// The not-present PTE that stands for this entry (__swp_entry_to_pte), with <paramref name="flags"/> in bits 1-4.
    /// </summary>
    /// <exception cref="InvalidOperationException">The entry is none: a zero PTE already means "nothing mapped".</exception>
    public ulong ToPte(SwapPteFlags flags = SwapPteFlags.None)
    {
        if (IsNone) throw new InvalidOperationException("A none swap entry has no swap PTE (a zero PTE is pte_none).");
        if (((ulong)flags & ~FlagMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(flags), flags, "Only SoftDirty, UffdWp and Exclusive fit in a swap PTE (bits 1-4).");
        return (~Offset << OffsetShift >> TypeBits) | ((ulong)Type << (64 - TypeBits)) | (ulong)flags;
    }

    /// <summary>The entry a swap PTE holds (__pte_to_swp_entry); its flag bits are ignored.</summary>
    /// <exception cref="ArgumentException">The PTE is not a swap PTE (<see cref="IsSwapPte"/>).</exception>
    public static SwapEntry FromPte(ulong pte)
    {
        if (!IsSwapPte(pte))
            throw new ArgumentException($"PTE 0x{pte:x16} is not a swap PTE (it is {(pte == 0 ? "none" : "present or PROT_NONE")}).", nameof(pte));
        int type = (int)(pte >> (64 - TypeBits));
        ulong offset = ~pte << TypeBits >> OffsetShift;
        return new SwapEntry((ulong)type << ValueTypeShift | offset);
    }

    /// <summary>The flag bits of a swap PTE.</summary>
    public static SwapPteFlags FlagsOf(ulong pte) => (SwapPteFlags)(pte & FlagMask);

    /// <summary>
    /// Whether <paramref name="pte"/> holds a swap entry (is_swap_pte): not none (non-zero) and not present, where
    /// PROT_NONE (bit 8 without bit 0) counts as present, as pte_present says.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSwapPte(ulong pte) => pte != 0 && (pte & (Present | ProtNone)) == 0;

    /// <inheritdoc/>
    public bool Equals(SwapEntry other) => _value == other._value;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is SwapEntry other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => _value.GetHashCode();

    /// <summary>Equal entries.</summary>
    public static bool operator ==(SwapEntry left, SwapEntry right) => left.Equals(right);

    /// <summary>Different entries.</summary>
    public static bool operator !=(SwapEntry left, SwapEntry right) => !left.Equals(right);

    /// <summary>"none" or "swp type:offset" with the offset in hex.</summary>
    public override string ToString() => IsNone ? "none" : $"swp {Type}:0x{Offset:x}";
}
