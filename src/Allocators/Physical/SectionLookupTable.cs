using System.Numerics;
using System.Runtime.InteropServices;

namespace Allocators.Physical;

/// <summary>
/// Open-addressing map from an address's aligned key to its online section, for the sparse model: keyed by the
/// sections' bytes (separate host allocations each aligned to the section size: virt_to_page), or by their frame
/// arrays (each aligned to its power-of-two size: telling a frame pointer from a wild one without reading it).
/// Immutable once built.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SectionLookupTable
{
    private int _mask;
    private int _shift;
    private Entry* _entries;

    [StructLayout(LayoutKind.Sequential)]
    private struct Entry
    {
        public nuint Key;
        public MemSection* Section;
    }

    /// <summary>A table of the online sections keyed by <c>Base &gt;&gt; shift</c>, or by <c>MemMap &gt;&gt; shift</c> when <paramref name="byMemMap"/>.</summary>
    public static SectionLookupTable* Create(int maxSections, int shift, MemSection* sections, bool byMemMap = false)
    {
        int capacity = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(4, maxSections * 2));
        var table = (SectionLookupTable*)NativeMemory.AllocZeroed((nuint)(sizeof(SectionLookupTable) + capacity * sizeof(Entry)));
        table->_mask = capacity - 1;
        table->_shift = shift;
        table->_entries = (Entry*)(table + 1);
        for (int i = 0; i < maxSections; i++)
        {
            if (sections[i].Online == 0) continue;
            nuint key = (byMemMap ? (nuint)sections[i].MemMap : (nuint)sections[i].Base) >> shift;
            int slot = Hash(key) & table->_mask;
            while (table->_entries[slot].Section != null) slot = (slot + 1) & table->_mask;
            table->_entries[slot].Key = key;
            table->_entries[slot].Section = sections + i;
        }
        return table;
    }

    public MemSection* Find(void* address)
    {
        nuint key = (nuint)address >> _shift;
        int slot = Hash(key) & _mask;
        while (true)
        {
            Entry* e = _entries + slot;
            if (e->Section == null) return null;
            if (e->Key == key) return e->Section;
            slot = (slot + 1) & _mask;
        }
    }

    private static int Hash(nuint key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 40);
}
