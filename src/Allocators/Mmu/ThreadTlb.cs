using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Mmu;

/// <summary>One TLB entry: the page's virtual address with permission bits in the low 12 bits, and the host address.</summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
internal unsafe struct TlbEntry
{
    /// <summary>Page-aligned virtual address | <see cref="ThreadTlb.Valid"/> | <see cref="ThreadTlb.Writable"/> | <see cref="ThreadTlb.Executable"/>; 0 when empty.</summary>
    public ulong Key;

    /// <summary>Host address of the page's first byte.</summary>
    public byte* Host;
}

/// <summary>
/// The software TLB of one thread for one address space: a 4-way set-associative cache of 64 sets (256 entries,
/// the size of a typical L1 dTLB), in native memory behind the <see cref="ThreadCacheHeader"/> that the
/// <see cref="ThreadCacheRegistry"/> needs.
/// </summary>
/// <remarks>
/// Only the owning thread reads or writes the entries, so a hit needs no lock and no atomic. Other threads flush it
/// by bumping the address space's TLB generation: the owner compares <see cref="Gen"/> with it on every access and
/// drops all entries on a mismatch (the kernel's tlb_gen scheme); <see cref="Gen"/> then also serves as the
/// acknowledgement of that flush. <see cref="Busy"/> is 1 while the owner is inside a translated access; a flusher
/// that is about to free pages waits until it sees the owner idle or acknowledging (see VirtualAddressSpace.Tlb).
/// Entries for a page with Dirty clear are filled without <see cref="Writable"/>, so the first write walks again and
/// sets Dirty, as an x86 TLB does.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ThreadTlb
{
    public const int Sets = 64;
    public const int Ways = 4;
    public const int SetMask = Sets - 1;
    public const ulong Valid = 1;
    public const ulong Writable = 2;
    public const ulong Executable = 4;
    public const ulong KeyMask = ~VirtualAddress.PageOffsetMask;
    public const int EntriesOffset = 128;
    public const int BlockSize = EntriesOffset + Sets * Ways * 16;

    public ThreadCacheHeader Header;   // 64 bytes, owned by the registry
    public int Busy;                   // 1 while inside an access (plain stores of constants: no dependency chain)
    public int Padding0;
    public long Gen;                   // the address space's TLB generation the entries belong to (the flush ack)
    public long Hits;
    public long Misses;
    public long FullFlushes;
    public long PageFlushes;
    public int Initialized;
    public int Padding;
    public long Reserved;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TlbEntry* Set(ThreadTlb* tlb, ulong va)
        => (TlbEntry*)((byte*)tlb + EntriesOffset + (nuint)((va >> 6) & (SetMask * Ways * 16)));

    public static TlbEntry* Entries(ThreadTlb* tlb) => (TlbEntry*)((byte*)tlb + EntriesOffset);

    /// <summary>Drops every entry (a full local flush).</summary>
    public static void Clear(ThreadTlb* tlb)
    {
        NativeMemory.Clear((byte*)tlb + EntriesOffset, Sets * Ways * 16);
        tlb->FullFlushes++;
    }

    /// <summary>Drops the entry of one page if present (invlpg).</summary>
    public static void ClearPage(ThreadTlb* tlb, ulong va)
    {
        TlbEntry* set = Set(tlb, va);
        ulong page = va & KeyMask;
        for (int w = 0; w < Ways; w++)
        {
            if ((set[w].Key & KeyMask) == page) set[w].Key = 0;
        }
        tlb->PageFlushes++;
    }

    /// <summary>Inserts a translation as the most recently used way of its set, evicting the least recently used.</summary>
    public static void Fill(ThreadTlb* tlb, ulong va, ulong permissions, byte* host)
    {
        TlbEntry* set = Set(tlb, va);
        ulong page = va & KeyMask;
        int victim = -1;
        for (int w = 0; w < Ways && victim < 0; w++)
        {
            if (set[w].Key != 0 && (set[w].Key & KeyMask) == page) victim = w;
        }
        for (int w = 0; w < Ways && victim < 0; w++)
        {
            if (set[w].Key == 0) victim = w;
        }
        if (victim < 0) victim = Ways - 1;
        for (int w = victim; w > 0; w--) set[w] = set[w - 1];
        set[0].Key = page | permissions;
        set[0].Host = host;
    }

    /// <summary>Looks in ways 1..3 and moves a hit to way 0; returns the host page or null.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static byte* LookupOtherWays(ThreadTlb* tlb, ulong va, ulong need)
    {
        TlbEntry* set = Set(tlb, va);
        ulong want = (va & KeyMask) | need;
        ulong mask = KeyMask | need;
        for (int w = 1; w < Ways; w++)
        {
            if ((set[w].Key & mask) == want)
            {
                TlbEntry hit = set[w];
                for (int k = w; k > 0; k--) set[k] = set[k - 1];
                set[0] = hit;
                return hit.Host;
            }
        }
        return null;
    }
}
