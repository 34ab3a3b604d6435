using Allocators.Filemap;

namespace Allocators.Mmu;

public sealed partial class AddressSpace
{
    /// <summary>
    /// Maps anonymous memory (mmap). Without <see cref="MapFlags.Fixed"/> the address is a hint; the result never lies
    /// below <see cref="VirtualAddress.MmapMinAddr"/> and keeps the stack's guard gap. Pages are faulted in on first
    /// touch, or now with <see cref="MapFlags.Populate"/>.
    /// </summary>
    /// <param name="address">Hint, or the exact address with <see cref="MapFlags.Fixed"/>/<see cref="MapFlags.FixedNoReplace"/>; 0 for none.</param>
    /// <param name="length">Bytes; rounded up to whole pages.</param>
    /// <param name="protection">PROT_* bits.</param>
    /// <param name="flags">Exactly one of <see cref="MapFlags.Private"/>/<see cref="MapFlags.Shared"/>, and <see cref="MapFlags.Anonymous"/>.</param>
    /// <returns>The start of the new mapping.</returns>
    /// <exception cref="ArgumentException">Bad length, flags, or a fixed address that is unaligned, below mmap_min_addr or beyond user space.</exception>
    /// <exception cref="InvalidOperationException"><see cref="MapFlags.FixedNoReplace"/> and the range is in use (EEXIST).</exception>
    /// <exception cref="OutOfMemoryException">No free range of that size, or, with <see cref="MapFlags.Populate"/>, no memory
    /// for a page or a page table; the new mapping is gone again then.</exception>
    public ulong Mmap(ulong address, ulong length, MemoryProtection protection, MapFlags flags)
    {
        ThrowIfDisposed();
        ulong len = CheckMmapLength(address, length, flags, out bool shared);
        if ((flags & MapFlags.Anonymous) == 0)
            throw new ArgumentException($"mmap at 0x{address:x}: only anonymous mappings are supported (MAP_ANONYMOUS).", nameof(flags));
        CheckMmapProtection(address, protection);
        bool fixedAddress = (flags & (MapFlags.Fixed | MapFlags.FixedNoReplace)) != 0;
        if (fixedAddress) ValidateUserRange(address, len, "mmap");

        VmFlags vmFlags = ToVmFlags(protection)
            | (shared ? VmFlags.Shared : 0)
            | ((flags & MapFlags.GrowsDown) != 0 ? VmFlags.GrowsDown : 0)
            | ((flags & MapFlags.HugePage) != 0 ? VmFlags.HugePage : 0);
        ulong align = (flags & MapFlags.HugePage) != 0 && len >= VirtualAddress.PmdSize ? VirtualAddress.PmdSize : VirtualAddress.PageSize;

        if ((flags & MapFlags.Populate) != 0) return MmapPopulate(address, len, align, flags, vmFlags);
        EnterMmapWrite();
        try
        {
            VmArea vma = MapRegion(address, len, align, flags, vmFlags);
            ulong start = vma.Start;
            MergeVma(vma);
            return start;
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// The checks every mmap makes first: a length that rounds to whole pages inside user space, and exactly one of
    /// MAP_SHARED and MAP_PRIVATE. Returns the rounded length.
    /// </summary>
    private static ulong CheckMmapLength(ulong address, ulong length, MapFlags flags, out bool shared)
    {
        if (length == 0) throw new ArgumentException($"mmap at 0x{address:x}: length is 0 (EINVAL).", nameof(length));
        ulong len = VirtualAddress.PageAlignUp(length);
        if (len < length || len > VirtualAddress.TaskSize)
            throw new ArgumentException($"mmap at 0x{address:x}: length 0x{length:x} is too large (ENOMEM).", nameof(length));
        shared = (flags & MapFlags.Shared) != 0;
        if (shared == ((flags & MapFlags.Private) != 0))
            throw new ArgumentException($"mmap at 0x{address:x}: exactly one of MAP_SHARED and MAP_PRIVATE is required (EINVAL).", nameof(flags));
        return len;
    }

    /// <summary>Only PROT_READ, PROT_WRITE and PROT_EXEC bits.</summary>
    private static void CheckMmapProtection(ulong address, MemoryProtection protection)
    {
        if ((protection & ~MemoryProtection.ReadWrite & ~MemoryProtection.Exec) != 0)
            throw new ArgumentException($"mmap at 0x{address:x}: unknown protection bits {protection}.", nameof(protection));
    }

    /// <summary>
    /// mmap_region: the new area at <paramref name="address"/> (replacing what lies there with
    /// <see cref="MapFlags.Fixed"/>) or at a free range, inserted but not yet merged. Under the mmap_lock for writing.
    /// </summary>
    private VmArea MapRegion(ulong address, ulong len, ulong align, MapFlags flags, VmFlags vmFlags, FileMapping? file = null, ulong pgoff = 0)
    {
        ulong start;
        if ((flags & MapFlags.FixedNoReplace) != 0)
        {
            if (!NoOverlap(address, address + len))
                throw new InvalidOperationException($"mmap: [0x{address:x}, 0x{address + len:x}) overlaps an existing mapping (EEXIST).");
            start = address;
        }
        else if ((flags & MapFlags.Fixed) != 0)
        {
            var gather = new TlbGather();
            DoMunmap(address, address + len, gather);
            FinishGather(gather);
            start = address;
        }
        else
        {
            start = GetUnmappedArea(address, len, align);
        }
        // An anonymous area's vm_pgoff is its start page: the linear index its pages keep for the rmap across mremap.
        if (file == null && (vmFlags & VmFlags.Shared) == 0) pgoff = start >> VirtualAddress.PageShift;
        var vma = new VmArea(start, start + len, vmFlags) { File = file, PgOff = pgoff };
        if (file != null) file.LinkMapper(this);
        else if ((vmFlags & VmFlags.Shared) != 0)
        {
            vma.Shared = new ShmemObject(_kernel, len >> VirtualAddress.PageShift);
            vma.Shared.Mappers.Link(this);
        }
        _vmas.Insert(vma);
        return vma;
    }

    /// <summary>
    /// mmap with MAP_POPULATE. The caller gets the address only once every page is in, so a failure has to take the
    /// mapping away again: a caller that never saw the address could never unmap it (the kernel instead returns the
    /// mapping and ignores mm_populate's failure). The upgradeable mmap_lock keeps other threads' mmap, munmap and
    /// mremap off the new area meanwhile, while their faults go on; the area is merged with its neighbours only once
    /// populated, so that until then it is exactly what a failure removes. Mappings replaced by MAP_FIXED stay
    /// unmapped, as after a failed mmap in Linux.
    /// </summary>
    private ulong MmapPopulate(ulong address, ulong len, ulong align, MapFlags flags, VmFlags vmFlags, FileMapping? file = null, ulong pgoff = 0)
    {
        _mmapLock.EnterUpgradeableReadLock();
        try
        {
            VmArea vma;
            EnterMmapWrite();
            try { vma = MapRegion(address, len, align, flags, vmFlags, file, pgoff); }
            finally { ExitMmapWrite(); }
            ulong start = vma.Start;
            try
            {
                // A file mapping is populated up to the end of the file; the pages past it would be bus errors.
                ulong populate = len;
                if (file != null) populate = Math.Min(len, (PagesIn(file.Length) - Math.Min(pgoff, PagesIn(file.Length))) << VirtualAddress.PageShift);
                Populate(start, populate, vmFlags);
            }
            catch
            {
                UnmapRange(start, start + len);
                throw;
            }
            EnterMmapWrite();
            try { MergeVma(vma); }
            finally { ExitMmapWrite(); }
            return start;
        }
        finally { _mmapLock.ExitUpgradeableReadLock(); }
    }

    /// <summary>mm_populate: faults every page of the new mapping in, for writing where a write would copy-on-write.</summary>
    private void Populate(ulong start, ulong length, VmFlags flags)
    {
        if ((flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0) return;
        MemoryAccess access = (flags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write ? MemoryAccess.Write : MemoryAccess.Read;
        for (ulong va = start; va < start + length; va += VirtualAddress.PageSize) Touch(va, access);
    }

    /// <summary>Removes the mappings in [<paramref name="address"/>, +<paramref name="length"/>) (munmap); unmapped holes are fine.</summary>
    /// <exception cref="ArgumentException">Unaligned address, zero length, or a range outside user space (EINVAL).</exception>
    public void Munmap(ulong address, ulong length)
    {
        ThrowIfDisposed();
        if (length == 0) throw new ArgumentException($"munmap at 0x{address:x}: length is 0 (EINVAL).", nameof(length));
        ulong len = VirtualAddress.PageAlignUp(length);
        ValidateUserRange(address, len, "munmap", allowLow: true);
        UnmapRange(address, address + len);
    }

    /// <summary>Takes the mmap_lock for writing and unmaps [<paramref name="start"/>, <paramref name="end"/>), flushing and freeing what was mapped.</summary>
    private void UnmapRange(ulong start, ulong end)
    {
        var gather = new TlbGather();
        EnterMmapWrite();
        try
        {
            DoMunmap(start, end, gather);
            FinishGather(gather);
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// Changes the protection of [<paramref name="address"/>, +<paramref name="length"/>) (mprotect), splitting and
    /// merging areas; present entries are rewritten and flushed.
    /// </summary>
    /// <exception cref="ArgumentException">Unaligned address or bad protection (EINVAL).</exception>
    /// <exception cref="InvalidOperationException">Part of the range is not mapped (ENOMEM); nothing changes then.</exception>
    public void Mprotect(ulong address, ulong length, MemoryProtection protection)
    {
        ThrowIfDisposed();
        if (length == 0) return;
        ulong len = VirtualAddress.PageAlignUp(length);
        ValidateUserRange(address, len, "mprotect", allowLow: true);
        if ((protection & ~MemoryProtection.ReadWrite & ~MemoryProtection.Exec) != 0)
            throw new ArgumentException($"mprotect at 0x{address:x}: unknown protection bits {protection}.", nameof(protection));
        ulong end = address + len;
        VmFlags newProt = ToVmFlags(protection);
        EnterMmapWrite();
        try
        {
            // The whole range must be mapped before anything changes.
            ulong cursor = address;
            for (VmArea? v = _vmas.FindVma(address); cursor < end; v = v.Next)
            {
                if (v == null || v.Start > cursor)
                    throw new InvalidOperationException($"mprotect: 0x{cursor:x} in [0x{address:x}, 0x{end:x}) is not mapped (ENOMEM).");
                if (v.File != null && v.IsShared && (newProt & VmFlags.Write) != 0 && !v.File.CanWrite)
                    throw new UnauthorizedAccessException($"mprotect: {v.File.Path} was opened read-only; its shared mapping cannot become writable (EACCES).");
                cursor = v.End;
            }
            VmArea vma = _vmas.FindVma(address)!;
            if (vma.Start < address) vma = SplitVma(vma, address);
            var touched = new List<VmArea>();
            for (VmArea? v = vma; v != null && v.Start < end; v = v.Next)
            {
                if (v.End > end) SplitVma(v, end);
                touched.Add(v);
            }
            foreach (VmArea v in touched)
            {
                VmFlags flags = (v.Flags & ~(VmFlags.Read | VmFlags.Write | VmFlags.Exec)) | newProt;
                if (flags == v.Flags) continue;
                v.Flags = flags;
                ChangeProtection(v.Start, v.End, flags, writeNotify: v.File != null && v.IsShared);
            }
            foreach (VmArea v in touched)
            {
                if (_vmas.Find(v.Start) == v) MergeVma(v);
            }
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// Moves the program break (brk). Returns the new break, or the unchanged one when the request cannot be met
    /// (below start_brk, or the heap would run into another mapping); <c>Brk(0)</c> queries it.
    /// </summary>
    public ulong Brk(ulong newBrk)
    {
        ThrowIfDisposed();
        var gather = new TlbGather();
        EnterMmapWrite();
        try
        {
            ulong brk = _brk;
            if (newBrk < _startBrk || newBrk > VirtualAddress.TaskSize) return brk;
            ulong oldEnd = VirtualAddress.PageAlignUp(brk);
            ulong newEnd = VirtualAddress.PageAlignUp(newBrk);
            if (newEnd < oldEnd)
            {
                DoMunmap(newEnd, oldEnd, gather);
                FinishGather(gather);
            }
            else if (newEnd > oldEnd)
            {
                if (!RangeIsFree(oldEnd, newEnd)) return brk;
                VmArea? heap = oldEnd > _startBrk ? _vmas.Find(oldEnd - 1) : null;
                if (heap != null && heap.Name == "[heap]" && heap.End == oldEnd) heap.End = newEnd;
                else _vmas.Insert(new VmArea(oldEnd, newEnd, VmFlags.Read | VmFlags.Write) { Name = "[heap]", PgOff = oldEnd >> VirtualAddress.PageShift });
            }
            _brk = newBrk;
            return newBrk;
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// Resizes and possibly moves a mapping (mremap). Shrinking unmaps the tail; growing extends in place when the
    /// following range is free, else moves the page-table entries (not the data) to a new range when
    /// <see cref="MremapFlags.MayMove"/> is set. The old range must lie in one area.
    /// </summary>
    /// <returns>The (possibly new) start address.</returns>
    /// <exception cref="ArgumentException">Unaligned address, zero size, or bad flags (EINVAL).</exception>
    /// <exception cref="InvalidOperationException">The old range is not one mapping (EFAULT).</exception>
    /// <exception cref="OutOfMemoryException">It cannot grow in place and may not move, or no range is free (ENOMEM).</exception>
    public ulong Mremap(ulong oldAddress, ulong oldSize, ulong newSize, MremapFlags flags, ulong newAddress = 0)
    {
        ThrowIfDisposed();
        if (oldSize == 0 || newSize == 0)
            throw new ArgumentException($"mremap 0x{oldAddress:x}: sizes must be non-zero (EINVAL).", nameof(oldSize));
        if ((flags & MremapFlags.Fixed) != 0 && (flags & MremapFlags.MayMove) == 0)
            throw new ArgumentException("mremap: MREMAP_FIXED requires MREMAP_MAYMOVE (EINVAL).", nameof(flags));
        ulong oldLen = VirtualAddress.PageAlignUp(oldSize);
        ulong newLen = VirtualAddress.PageAlignUp(newSize);
        ValidateUserRange(oldAddress, oldLen, "mremap");
        if ((flags & MremapFlags.Fixed) != 0) ValidateUserRange(newAddress, newLen, "mremap");
        var gather = new TlbGather();
        EnterMmapWrite();
        try
        {
            VmArea? vma = _vmas.Find(oldAddress);
            if (vma == null || oldAddress + oldLen > vma.End)
                throw new InvalidOperationException($"mremap: [0x{oldAddress:x}, 0x{oldAddress + oldLen:x}) is not within one mapping (EFAULT).");
            ulong result;
            if ((flags & MremapFlags.Fixed) != 0)
            {
                if (newAddress < oldAddress + oldLen && oldAddress < newAddress + newLen)
                    throw new ArgumentException($"mremap: new range 0x{newAddress:x} overlaps the old one (EINVAL).", nameof(newAddress));
                DoMunmap(newAddress, newAddress + newLen, gather);
                FinishGather(gather);
                vma = _vmas.Find(oldAddress)!;
                if (newLen < oldLen)
                {
                    DoMunmap(oldAddress + newLen, oldAddress + oldLen, gather);
                    FinishGather(gather);
                    oldLen = newLen;
                    vma = _vmas.Find(oldAddress)!;
                }
                result = MoveVma(vma, oldAddress, oldLen, newAddress, newLen, gather);
            }
            else if (newLen <= oldLen)
            {
                if (newLen < oldLen)
                {
                    DoMunmap(oldAddress + newLen, oldAddress + oldLen, gather);
                    FinishGather(gather);
                }
                result = oldAddress;
            }
            else if (oldAddress + oldLen == vma.End && RangeIsFree(vma.End, oldAddress + newLen) && oldAddress + newLen <= VirtualAddress.TaskSize)
            {
                vma.Shared?.EnsureCapacity(vma.PageIndex(oldAddress + newLen));
                vma.End = oldAddress + newLen;
                MergeVma(vma);
                result = oldAddress;
            }
            else if ((flags & MremapFlags.MayMove) != 0)
            {
                ulong align = (vma.Flags & VmFlags.HugePage) != 0 && newLen >= VirtualAddress.PmdSize ? VirtualAddress.PmdSize : VirtualAddress.PageSize;
                ulong target = GetUnmappedArea(0, newLen, align);
                result = MoveVma(vma, oldAddress, oldLen, target, newLen, gather);
            }
            else
            {
                throw new OutOfMemoryException($"mremap: 0x{oldAddress:x} cannot grow to 0x{newLen:x} bytes in place and MREMAP_MAYMOVE is not set (ENOMEM).");
            }
            FinishGather(gather);
            return result;
        }
        finally { ExitMmapWrite(); }
    }

    /// <summary>
    /// move_vma: a new area at <paramref name="target"/> with the old one's backing, the entries of the old range
    /// moved over (pages keep their mapcounts), and the old range unmapped. When a page table for the new range cannot
    /// be had, the tables already made for it are freed and nothing has moved (the kernel moves the entries back
    /// instead); huge pages of the old range stay split, which changes no count.
    /// </summary>
    private ulong MoveVma(VmArea vma, ulong oldAddress, ulong oldLen, ulong target, ulong newLen, TlbGather gather)
    {
        var moved = vma.CloneDescriptor(this);
        moved.Start = target;
        moved.End = target + newLen;
        moved.PgOff = vma.PageIndex(oldAddress);
        moved.Shared?.EnsureCapacity(moved.PageIndex(moved.End));
        SplitHugeRange(oldAddress, oldAddress + oldLen);
        if (!MovePageTables(oldAddress, target, oldLen))
        {
            moved.Release(this);
            ZapRange(target, target + oldLen, gather, null); // maps nothing: frees the tables left empty
            FinishGather(gather);
            throw new OutOfMemoryException($"mremap: no memory for the page tables of [0x{target:x}, 0x{target + newLen:x}) (ENOMEM).");
        }
        _vmas.Insert(moved);
        DoMunmap(oldAddress, oldAddress + oldLen, gather);
        MergeVma(moved);
        return target;
    }

    /// <summary>
    /// move_page_tables: moves every mapped entry of [old, old + length) to new (huge entries already split). The
    /// tables of the new range are all made before the first entry moves; false, with no entry moved, when one cannot be.
    /// </summary>
    private unsafe bool MovePageTables(ulong oldAddress, ulong newAddress, ulong length)
    {
        lock (_ptl)
        {
            for (ulong off = 0; off < length; off += VirtualAddress.PageSize)
            {
                ulong* src = FindPteSlot(oldAddress + off);
                if (src != null && *src != 0 && AllocPteSlot(newAddress + off, PteFlags.PageTable) == null) return false;
            }
            bool any = false;
            for (ulong off = 0; off < length; off += VirtualAddress.PageSize)
            {
                ulong* src = FindPteSlot(oldAddress + off);
                if (src == null || *src == 0) continue;
                ulong* dst = FindPteSlot(newAddress + off);
                ulong e = Interlocked.Exchange(ref *src, 0);
                TablePage(AlignToTable(src))->Data0--;
                Volatile.Write(ref *dst, e);
                TablePage(AlignToTable(dst))->Data0++;
                any = true;
            }
            if (any) Flush(oldAddress, oldAddress + length, waitForAccesses: true);
            else FlushBatchedPending();
            return true;
        }
    }

    private static VmFlags ToVmFlags(MemoryProtection protection)
        => ((protection & MemoryProtection.Read) != 0 ? VmFlags.Read : 0)
        | ((protection & MemoryProtection.Write) != 0 ? VmFlags.Write : 0)
        | ((protection & MemoryProtection.Exec) != 0 ? VmFlags.Exec : 0);

    private bool NoOverlap(ulong start, ulong end)
    {
        VmArea? v = _vmas.FindVma(start);
        return v == null || v.Start >= end;
    }

    private static void ValidateUserRange(ulong address, ulong length, string op, bool allowLow = false)
    {
        if (!VirtualAddress.IsPageAligned(address))
            throw new ArgumentException($"{op}: address 0x{address:x} is not page aligned (EINVAL).", nameof(address));
        if (!allowLow && address < VirtualAddress.MmapMinAddr)
            throw new ArgumentException($"{op}: address 0x{address:x} is below mmap_min_addr 0x{VirtualAddress.MmapMinAddr:x} (EPERM).", nameof(address));
        if (address + length < address || address + length > VirtualAddress.TaskSize)
            throw new ArgumentException($"{op}: [0x{address:x}, +0x{length:x}) is beyond user space 0x{VirtualAddress.TaskSize:x} (EINVAL).", nameof(address));
    }
}
