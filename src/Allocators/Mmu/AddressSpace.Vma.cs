namespace Allocators.Mmu;

public sealed partial class AddressSpace
{
    /// <summary>
    /// __split_vma: cuts <paramref name="vma"/> at <paramref name="addr"/>; returns the new upper part. A huge page
    /// mapped across the cut is split first (vma_adjust_trans_huge): a huge leaf never spans two areas, even when the
    /// change that cuts them leaves both halves alike.
    /// </summary>
    private VmArea SplitVma(VmArea vma, ulong addr)
    {
        if ((addr & (VirtualAddress.PmdSize - 1)) != 0) SplitHugeRange(addr, addr + VirtualAddress.PageSize);
        var upper = vma.CloneDescriptor(this);
        upper.Start = addr;
        upper.End = vma.End;
        upper.PgOff = vma.PageIndex(addr);
        vma.End = addr;
        _vmas.Insert(upper);
        return upper;
    }

    /// <summary>True when two adjacent areas may become one (is_mergeable_vma).</summary>
    private static bool CanMerge(VmArea left, VmArea right)
        => left.End == right.Start
        && left.Flags == right.Flags
        && left.Name == right.Name
        && ReferenceEquals(left.Shared, right.Shared)
        && ReferenceEquals(left.File, right.File)
        && left.PageIndex(left.End) == right.PgOff; // anonymous areas too: their pages' linear indices must line up

    /// <summary>vma_merge: joins <paramref name="vma"/> with its neighbours where possible; returns the surviving area.</summary>
    private VmArea MergeVma(VmArea vma)
    {
        VmArea? next = vma.Next;
        if (next != null && CanMerge(vma, next))
        {
            _vmas.Remove(next);
            vma.End = next.End;
            next.Release(this);
        }
        VmArea? prev = vma.Prev;
        if (prev != null && CanMerge(prev, vma))
        {
            _vmas.Remove(vma);
            prev.End = vma.End;
            vma.Release(this);
            return prev;
        }
        return vma;
    }

    /// <summary>
    /// do_vmi_munmap: splits areas at the range's ends, removes the areas inside and zaps the range into
    /// <paramref name="gather"/>. The caller finishes the gather (flush, then free) and holds the mmap_lock for writing.
    /// </summary>
    private void DoMunmap(ulong start, ulong end, TlbGather gather)
    {
        VmArea? vma = _vmas.FindVma(start);
        if (vma == null || vma.Start >= end) return;
        if (vma.Start < start) vma = SplitVma(vma, start);
        var doomed = new List<VmArea>();
        for (VmArea? v = vma; v != null && v.Start < end; v = v.Next)
        {
            if (v.End > end) SplitVma(v, end);
            doomed.Add(v);
        }
        foreach (VmArea v in doomed) _vmas.Remove(v);
        foreach (VmArea v in doomed) ZapRange(v.Start, v.End, gather, v.File);
        foreach (VmArea v in doomed) v.Release(this);
    }

    /// <summary>True when no area overlaps [start, end) and, below a stack, the guard gap stays free.</summary>
    private bool RangeIsFree(ulong start, ulong end)
    {
        VmArea? next = _vmas.FindVma(start);
        if (next == null) return true;
        ulong limit = next.Start;
        if ((next.Flags & VmFlags.GrowsDown) != 0) limit = limit >= StackGuardGap ? limit - StackGuardGap : 0;
        return end <= limit;
    }

    /// <summary>
    /// get_unmapped_area: the hint when it is usable, else the highest free gap below <see cref="MmapBase"/>
    /// (top-down placement, keeping stack guard gaps), else any gap. Throws when the address space is full.
    /// </summary>
    private ulong GetUnmappedArea(ulong hint, ulong length, ulong align)
    {
        if (hint != 0)
        {
            hint = VirtualAddress.PageAlignDown(hint);
            if (hint >= VirtualAddress.MmapMinAddr && hint + length <= VirtualAddress.TaskSize && hint + length > hint
                && (hint & (align - 1)) == 0 && RangeIsFree(hint, hint + length))
                return hint;
        }
        ulong found = FindGapTopDown(length, align, MmapBase);
        if (found == 0) found = FindGapTopDown(length, align, VirtualAddress.TaskSize);
        if (found == 0)
            throw new OutOfMemoryException($"mmap: no free range of 0x{length:x} bytes in the address space of {Name}[{Pid}].");
        return found;
    }

    /// <summary>The highest <paramref name="align"/>-aligned free range of <paramref name="length"/> bytes ending at or below <paramref name="ceiling"/>, or 0.</summary>
    private ulong FindGapTopDown(ulong length, ulong align, ulong ceiling)
    {
        VmArea? prev = _vmas.FindPrev(ceiling);
        VmArea? above = prev == null ? _vmas.First : prev.Next;
        ulong gapEnd = Math.Min(ceiling, LowerLimit(above));
        while (true)
        {
            ulong gapStart = Math.Max(prev?.End ?? 0, VirtualAddress.MmapMinAddr);
            if (gapEnd > gapStart && gapEnd - gapStart >= length)
            {
                ulong candidate = (gapEnd - length) & ~(align - 1);
                if (candidate >= gapStart) return candidate;
            }
            if (prev == null) return 0;
            gapEnd = Math.Min(gapEnd, LowerLimit(prev));
            prev = prev.Prev;
        }
    }

    /// <summary>The lowest address a new mapping below <paramref name="vma"/> may end at (its start, less the guard gap of a stack).</summary>
    private static ulong LowerLimit(VmArea? vma)
    {
        if (vma == null) return ulong.MaxValue;
        if ((vma.Flags & VmFlags.GrowsDown) == 0) return vma.Start;
        return vma.Start >= StackGuardGap ? vma.Start - StackGuardGap : 0;
    }
}
