namespace Allocators.Mmu;

public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// Kernel-mode copy into user memory (copy_to_user): faults are handled as for the process (demand paging,
    /// copy-on-write), and a fault that cannot be fixed stops the copy through the exception-table fix-up.
    /// </summary>
    /// <returns>The number of bytes NOT copied (0 on success).</returns>
    public long CopyToUser(ulong to, ReadOnlySpan<byte> from)
    {
        ThrowIfDisposed();
        if (!AccessOk(to, from.Length)) return from.Length;
        fixed (byte* p = from)
        {
            _kasan?.Check(p, (nuint)from.Length, write: false, "copy_to_user");
            return Access(to, p, from.Length, CopyOp.FromBuffer, 0, MemoryAccess.Write, user: false, fixup: true);
        }
    }

    /// <summary>Kernel-mode copy out of user memory (copy_from_user).</summary>
    /// <returns>The number of bytes NOT copied (0 on success).</returns>
    public long CopyFromUser(Span<byte> to, ulong from)
    {
        ThrowIfDisposed();
        if (!AccessOk(from, to.Length)) return to.Length;
        fixed (byte* p = to)
        {
            _kasan?.Check(p, (nuint)to.Length, write: true, "copy_from_user");
            return Access(from, p, to.Length, CopyOp.ToBuffer, 0, MemoryAccess.Read, user: false, fixup: true);
        }
    }

    /// <summary>Kernel-mode zeroing of user memory (clear_user). Returns the number of bytes NOT cleared.</summary>
    public long ClearUser(ulong to, long length)
    {
        ThrowIfDisposed();
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!AccessOk(to, length)) return length;
        return Access(to, null, length, CopyOp.Fill, 0, MemoryAccess.Write, user: false, fixup: true);
    }

    /// <summary>
    /// A kernel-mode read through this process's page tables (e.g. of a vmalloc address, which syncs the PGD entry
    /// from the kernel on first use). An unfixable fault is an oops.
    /// </summary>
    /// <exception cref="KernelOopsException">The address cannot be read in kernel mode.</exception>
    public T ReadKernel<T>(ulong va) where T : unmanaged
    {
        T value = default;
        Access(va, (byte*)&value, sizeof(T), CopyOp.ToBuffer, 0, MemoryAccess.Read, user: false, fixup: false);
        return value;
    }

    /// <summary>A kernel-mode write through this process's page tables. An unfixable fault is an oops.</summary>
    /// <exception cref="KernelOopsException">The address cannot be written in kernel mode.</exception>
    public void WriteKernel<T>(ulong va, T value) where T : unmanaged
        => Access(va, (byte*)&value, sizeof(T), CopyOp.FromBuffer, 0, MemoryAccess.Write, user: false, fixup: false);

    /// <summary>access_ok: the range lies in user space.</summary>
    private static bool AccessOk(ulong address, long length)
        => length >= 0 && address + (ulong)length >= address && address + (ulong)length <= VirtualAddress.TaskSize;
}
