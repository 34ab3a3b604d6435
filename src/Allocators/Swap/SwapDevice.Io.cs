using Allocators.Common;
using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;

namespace Allocators.Swap;

public sealed unsafe partial class SwapDevice
{
    private const int Eio = 5;

    /// <summary>
    /// Writes the page at <paramref name="src"/> to the slot (swap_writepage): 4096 bytes at offset slot * 4096 of the
    /// file, in one pwrite-style call straight from the frame. The slot must be in use.
    /// </summary>
    /// <exception cref="IOException">The write failed or was cut short, or <see cref="FailMakeRequest"/> failed it; names the path, slot and errno. The slot stays as it was.</exception>
    /// <exception cref="MemoryCorruptionException">The entry is not of this device, out of range, or free.</exception>
    internal void WritePage(SwapEntry entry, byte* src)
    {
        uint offset = CheckInUse(entry, "swap_writepage");
        if (FailMakeRequest.Enabled && FailMakeRequest.ShouldFail(PageFrame.PageSize, 0, Gfp.NoIo))
            throw Injected("write", offset);
        IoVector vector = IoVector.Rent();
        vector.Add(src, PageFrame.PageSize);
        try
        {
            vector.WriteTo(_file, (long)offset * PageFrame.PageSize);
        }
        catch (IOException e)
        {
            throw new IOException($"swap_writepage: {Path}, slot {offset}: {e.Message}", e.HResult);
        }
    }

    /// <summary>Reads the slot's 4096 bytes into <paramref name="dst"/> (swap_read_folio). The slot must be in use.</summary>
    /// <exception cref="IOException">The read failed or was short, or was failed on purpose; names the path, slot and errno.</exception>
    /// <exception cref="MemoryCorruptionException">The entry is not of this device, out of range, or free.</exception>
    internal void ReadPage(SwapEntry entry, byte* dst)
    {
        uint offset = CheckInUse(entry, "swap_read_folio");
        if (ReadPages(offset, 1, &dst) != 1)
            throw new IOException($"swap_read_folio: {Path}, slot {offset}: short read (end of file before the slot's end).", Eio | unchecked((int)0x80070000));
    }

    /// <summary>
    /// Reads <paramref name="count"/> consecutive slots from <paramref name="firstOffset"/> into the pages at
    /// <paramref name="dsts"/> with one preadv (swap readahead of neighbouring slots); returns the pages read in full.
    /// The slots' map entries are not checked: readahead reads neighbours whatever they hold, and the caller keeps only
    /// those it claimed with <see cref="SwapcachePrepare"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside slots 1..last_page, or is longer than one vectored call takes.</exception>
    /// <exception cref="IOException">The read failed, or was failed on purpose; names the path, slot and errno.</exception>
    internal int ReadPages(uint firstOffset, int count, byte** dsts)
    {
        if (count < 1 || count > IoVector.MaxPages)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"swap readahead on {Path} reads 1..{IoVector.MaxPages} slots at once.");
        if (firstOffset == 0 || (ulong)firstOffset + (uint)count > _maxPages)
            throw new ArgumentOutOfRangeException(nameof(firstOffset), firstOffset, $"Slots {firstOffset}..{(ulong)firstOffset + (uint)count - 1} are not all inside {Path}'s slots 1..{_maxPages - 1}.");
        if (FailMakeRequestReads && FailMakeRequest.Enabled && FailMakeRequest.ShouldFail((long)count * PageFrame.PageSize, 0, Gfp.NoIo))
            throw Injected("read", firstOffset);
        IoVector vector = IoVector.Rent();
        for (int i = 0; i < count; i++) vector.Add(dsts[i], PageFrame.PageSize);
        try
        {
            return (int)(vector.ReadFrom(_file, (long)firstOffset * PageFrame.PageSize) / PageFrame.PageSize);
        }
        catch (IOException e)
        {
            throw new IOException($"swap_read_folio: {Path}, slots {firstOffset}..{firstOffset + (uint)count - 1}: {e.Message}", e.HResult);
        }
    }

    private uint CheckInUse(SwapEntry entry, string caller)
    {
        uint offset = CheckEntry(entry, caller);
        ushort value = Volatile.Read(ref _map[offset]);
        if (value == 0) throw Corrupt(caller, "Unused swap offset entry", entry, value);
        return offset;
    }

    private IOException Injected(string what, uint offset)
        => new($"swap {what}: {Path}, slot {offset}: EIO (Input/output error), injected by fail_make_request.", Eio | unchecked((int)0x80070000));
}
