using System.Numerics;

namespace Allocators.Native;

public static unsafe partial class HostMemory
{
    /// <summary>
    /// Reserves <paramref name="size"/> bytes of address space with no access rights and no swap
    /// reservation (<c>PROT_NONE</c>, <c>MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE</c>), starting at a
    /// multiple of <paramref name="alignment"/>. The mapping is over-reserved and the excess on both
    /// sides is returned with <c>munmap</c>.
    /// </summary>
    /// <param name="size">Bytes to reserve; rounded up to whole pages.</param>
    /// <param name="alignment">A power of two no smaller than the page size.</param>
    /// <returns>The start of the reservation.</returns>
    /// <exception cref="ArgumentException">The size is zero or the alignment is invalid.</exception>
    /// <exception cref="HostMemoryException">The kernel refused the mapping.</exception>
    public static void* Reserve(nuint size, nuint alignment)
    {
        RequirePositive(size, nameof(size));
        if (!BitOperations.IsPow2(alignment) || alignment < s_pageSize)
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, $"Alignment must be a power of two no smaller than the page size ({s_pageSize}).");
        }

        nuint length = RoundUp(size, s_pageSize, nameof(size));
        nuint slack = alignment - s_pageSize;
        if (length > nuint.MaxValue - slack)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "Size plus alignment overflows the address space.");
        }

        nuint total = length + slack;
        const int flags = Libc.MapPrivate | Libc.MapAnonymous | Libc.MapNoReserve;
        void* raw = Libc.Mmap(null, total, Libc.ProtNone, flags, -1, 0);
        if (raw == Libc.MapFailed)
        {
            throw Failure("mmap", $"NULL, {Hex(total)}, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0 (reserve {Hex(size)} aligned to {Hex(alignment)})");
        }

        nuint start = (nuint)raw;
        nuint aligned = (start + alignment - 1) & ~(alignment - 1);
        nuint head = aligned - start;
        nuint tail = total - head - length;
        if (head != 0)
        {
            Release(raw, head);
        }

        if (tail != 0)
        {
            Release((void*)(aligned + length), tail);
        }

        return (void*)aligned;
    }

    /// <summary>Unmaps <paramref name="size"/> bytes at <paramref name="addr"/> (<c>munmap</c>).</summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="size">Length in bytes.</param>
    /// <exception cref="HostMemoryException">The kernel refused the call.</exception>
    public static void Release(void* addr, nuint size)
    {
        RequirePageAligned(addr, nameof(addr));
        RequirePositive(size, nameof(size));
        if (Libc.Munmap(addr, size) != 0)
        {
            throw Failure("munmap", $"{Hex(addr)}, {Hex(size)}");
        }
    }

    /// <summary>
    /// Maps private, zero-filled read/write memory exactly at <paramref name="addr"/>
    /// (<c>MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED</c>), replacing whatever was mapped there,
    /// for example to commit part of a <see cref="Reserve"/>d range.
    /// </summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes.</param>
    /// <exception cref="HostMemoryException">The kernel refused the mapping.</exception>
    public static void MapAnonymousFixed(void* addr, nuint length)
    {
        RequirePageAligned(addr, nameof(addr));
        RequirePositive(length, nameof(length));
        const int flags = Libc.MapPrivate | Libc.MapAnonymous | Libc.MapFixed;
        void* result = Libc.Mmap(addr, length, Libc.ProtRead | Libc.ProtWrite, flags, -1, 0);
        if (result == addr) return;
        string args = $"{Hex(addr)}, {Hex(length)}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0";
        CheckFixed(result, addr, args);
    }

    /// <summary>Changes the access rights of a range (<c>mprotect</c>).</summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="prot">A combination of <see cref="Libc.ProtRead"/>, <see cref="Libc.ProtWrite"/> and <see cref="Libc.ProtExec"/>, or <see cref="Libc.ProtNone"/>.</param>
    /// <exception cref="HostMemoryException">The kernel refused the call.</exception>
    public static void Protect(void* addr, nuint length, int prot)
    {
        RequirePageAligned(addr, nameof(addr));
        RequirePositive(length, nameof(length));
        if (Libc.Mprotect(addr, length, prot) != 0)
        {
            throw Failure("mprotect", $"{Hex(addr)}, {Hex(length)}, 0x{prot:x}");
        }
    }

    /// <summary>
    /// Drops the pages of a range (<c>madvise(MADV_DONTNEED)</c>). Private anonymous memory
    /// reads back as zeros afterwards; shared file mappings re-read the file.
    /// </summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes.</param>
    /// <exception cref="HostMemoryException">The kernel refused the call.</exception>
    public static void Discard(void* addr, nuint length) => Advise(addr, length, Libc.MadvDontNeed);

    /// <summary>Calls <c>madvise</c> with the given advice.</summary>
    /// <param name="addr">Page-aligned start of the range.</param>
    /// <param name="length">Length in bytes.</param>
    /// <param name="advice">One of the <c>Libc.Madv*</c> constants.</param>
    /// <exception cref="HostMemoryException">The kernel refused the call.</exception>
    public static void Advise(void* addr, nuint length, int advice)
    {
        RequirePageAligned(addr, nameof(addr));
        RequirePositive(length, nameof(length));
        if (Libc.Madvise(addr, length, advice) != 0)
        {
            throw Failure("madvise", $"{Hex(addr)}, {Hex(length)}, {advice}");
        }
    }

    // Callers build the argument text only once the call has failed: formatting it on every success costs more than the mmap.
    private static void CheckFixed(void* result, void* expected, string args)
    {
        if (result == Libc.MapFailed)
        {
            throw Failure("mmap", args);
        }

        if (result != expected)
        {
            throw new HostMemoryException($"mmap({args}) returned {Hex(result)} instead of the requested fixed address {Hex(expected)}.");
        }
    }

    private static nuint RoundUp(nuint value, nuint multiple, string paramName)
    {
        if (value > nuint.MaxValue - (multiple - 1))
        {
            throw new ArgumentOutOfRangeException(paramName, value, "Value overflows when rounded up to a page.");
        }

        return (value + multiple - 1) & ~(multiple - 1);
    }
}
