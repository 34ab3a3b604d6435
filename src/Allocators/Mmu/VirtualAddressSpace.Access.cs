using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Mmu;

public abstract unsafe partial class VirtualAddressSpace
{
    /// <summary>What the fault handler did.</summary>
    private protected enum FaultOutcome
    {
        /// <summary>The fault was resolved; retry the access.</summary>
        Retry,
        /// <summary>Unresolvable and the caller has a fix-up (exception table entry): stop and report failure.</summary>
        Failed,
    }

    /// <summary>
    /// The fault handler (do_page_fault). Resolves the fault and returns <see cref="FaultOutcome.Retry"/>; when it
    /// cannot, returns <see cref="FaultOutcome.Failed"/> if <paramref name="fixup"/> is set and throws otherwise.
    /// Also receives non-canonical addresses (as a general-protection fault).
    /// </summary>
    private protected abstract FaultOutcome HandleFault(ulong va, PageFaultErrorCode error, bool fixup);

    /// <summary>What <see cref="Access(ulong, byte*, long, CopyOp, byte, MemoryAccess, bool, bool)"/> does with each page.</summary>
    private protected enum CopyOp
    {
        /// <summary>Copy from the address space into the buffer.</summary>
        ToBuffer,
        /// <summary>Copy from the buffer into the address space.</summary>
        FromBuffer,
        /// <summary>Fill with a byte value.</summary>
        Fill,
        /// <summary>Resolve the access only.</summary>
        Touch,
    }

    /// <summary>Reads a <typeparamref name="T"/> at <paramref name="va"/> (may cross a page boundary).</summary>
    /// <exception cref="SegmentationFaultException">The access faulted in user mode and could not be resolved.</exception>
    /// <exception cref="KernelOopsException">The access faulted in kernel mode and could not be resolved.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T Read<T>(ulong va) where T : unmanaged => ReadWith<T>(FastTlb(), va);

    /// <summary>The TLB-hit read with the calling thread's TLB already at hand (null: take the slow path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal T ReadWith<T>(ThreadTlb* tlb, ulong va) where T : unmanaged
    {
        if (tlb != null && (uint)VirtualAddress.PageOffsetOf(va) <= (uint)(VirtualAddress.PageSize - sizeof(T)))
        {
            Volatile.Write(ref tlb->Busy, 1);
            TlbEntry* e = ThreadTlb.Set(tlb, va);
            if (tlb->Gen == Volatile.Read(ref _tlbGen)
                && (e->Key & ~(ThreadTlb.Writable | ThreadTlb.Executable)) == ((va & ThreadTlb.KeyMask) | ThreadTlb.Valid))
            {
                T value = Unsafe.ReadUnaligned<T>(e->Host + VirtualAddress.PageOffsetOf(va));
                Volatile.Write(ref tlb->Busy, 0);
                tlb->Hits++;
                return value;
            }
            Volatile.Write(ref tlb->Busy, 0);
        }
        return ReadSlow<T>(va);
    }

    /// <summary>Writes a <typeparamref name="T"/> at <paramref name="va"/> (may cross a page boundary).</summary>
    /// <exception cref="SegmentationFaultException">The access faulted in user mode and could not be resolved.</exception>
    /// <exception cref="KernelOopsException">The access faulted in kernel mode and could not be resolved.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write<T>(ulong va, T value) where T : unmanaged => WriteWith(FastTlb(), va, value);

    /// <summary>The TLB-hit write with the calling thread's TLB already at hand (null: take the slow path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteWith<T>(ThreadTlb* tlb, ulong va, T value) where T : unmanaged
    {
        if (tlb != null && (uint)VirtualAddress.PageOffsetOf(va) <= (uint)(VirtualAddress.PageSize - sizeof(T)))
        {
            Volatile.Write(ref tlb->Busy, 1);
            TlbEntry* e = ThreadTlb.Set(tlb, va);
            if (tlb->Gen == Volatile.Read(ref _tlbGen)
                && (e->Key & ~ThreadTlb.Executable) == ((va & ThreadTlb.KeyMask) | ThreadTlb.Valid | ThreadTlb.Writable))
            {
                Unsafe.WriteUnaligned(e->Host + VirtualAddress.PageOffsetOf(va), value);
                Volatile.Write(ref tlb->Busy, 0);
                tlb->Hits++;
                return;
            }
            Volatile.Write(ref tlb->Busy, 0);
        }
        WriteSlow(va, value);
    }

    /// <summary>
    /// A handle on the calling thread's TLB for this address space, for loops that want to skip even the one
    /// thread-local lookup of <see cref="Read{T}"/>. Use it on the calling thread only (it is a ref struct, so it
    /// cannot leave the stack) and not after the space is disposed.
    /// </summary>
    public AddressSpaceAccessor GetAccessor()
    {
        ThrowIfDisposed();
        return new AddressSpaceAccessor(this, _kasan != null ? null : CurrentTlb());
    }

    /// <summary>The TLB of an accessor, or null once the space is disposed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ThreadTlb* AccessorTlb(ThreadTlb* tlb) => _self != null ? tlb : null;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private T ReadSlow<T>(ulong va) where T : unmanaged
    {
        T value = default;
        Access(va, (byte*)&value, sizeof(T), CopyOp.ToBuffer, 0, MemoryAccess.Read, _userMode, fixup: false);
        return value;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteSlow<T>(ulong va, T value) where T : unmanaged
        => Access(va, (byte*)&value, sizeof(T), CopyOp.FromBuffer, 0, MemoryAccess.Write, _userMode, fixup: false);

    /// <summary>Fetches a <typeparamref name="T"/> as instructions at <paramref name="va"/> (an execute access: NX is checked).</summary>
    public T Fetch<T>(ulong va) where T : unmanaged
    {
        T value = default;
        Access(va, (byte*)&value, sizeof(T), CopyOp.ToBuffer, 0, MemoryAccess.Execute, _userMode, fixup: false);
        return value;
    }

    /// <summary>Copies <paramref name="destination"/>.Length bytes from <paramref name="va"/>, across pages as needed.</summary>
    public void ReadBytes(ulong va, Span<byte> destination)
    {
        fixed (byte* p = destination)
            Access(va, p, destination.Length, CopyOp.ToBuffer, 0, MemoryAccess.Read, _userMode, fixup: false);
    }

    /// <summary>Copies <paramref name="source"/> to <paramref name="va"/>, across pages as needed.</summary>
    public void WriteBytes(ulong va, ReadOnlySpan<byte> source)
    {
        fixed (byte* p = source)
            Access(va, p, source.Length, CopyOp.FromBuffer, 0, MemoryAccess.Write, _userMode, fixup: false);
    }

    /// <summary>Sets <paramref name="length"/> bytes at <paramref name="va"/> to <paramref name="value"/> (memset).</summary>
    public void Memset(ulong va, byte value, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Access(va, null, length, CopyOp.Fill, value, MemoryAccess.Write, _userMode, fixup: false);
    }

    /// <summary>
    /// Makes the access <paramref name="access"/> to the byte at <paramref name="va"/> without changing memory:
    /// the fault is resolved (a write breaks copy-on-write) and Accessed/Dirty are set as the access would.
    /// </summary>
    public void Touch(ulong va, MemoryAccess access)
        => Access(va, null, 1, CopyOp.Touch, 0, access, _userMode, fixup: false);

    /// <summary>
    /// Copies <paramref name="length"/> bytes from <paramref name="sourceVa"/> in <paramref name="source"/> to
    /// <paramref name="destinationVa"/> in <paramref name="destination"/> (which may be the same address space;
    /// overlapping ranges in one space behave like memmove in 4 KiB steps from low to high addresses).
    /// </summary>
    public static void Memcpy(VirtualAddressSpace destination, ulong destinationVa, VirtualAddressSpace source, ulong sourceVa, long length)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        byte* bounce = stackalloc byte[VirtualAddress.PageSize];
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, VirtualAddress.PageSize);
            source.Access(sourceVa, bounce, chunk, CopyOp.ToBuffer, 0, MemoryAccess.Read, source._userMode, fixup: false);
            destination.Access(destinationVa, bounce, chunk, CopyOp.FromBuffer, 0, MemoryAccess.Write, destination._userMode, fixup: false);
            sourceVa += (ulong)chunk;
            destinationVa += (ulong)chunk;
            length -= chunk;
        }
    }

    /// <summary>
    /// Resolves <paramref name="va"/> for a read, or a write when <paramref name="write"/> is set (faulting the page in), and returns the span of
    /// <paramref name="length"/> bytes behind it, which must lie in one page.
    /// </summary>
    /// <remarks>
    /// The span aliases the page itself and is not pinned: it stays valid while the mapping is left alone. After an
    /// munmap, mprotect, fork or copy-on-write of that page it may point at memory that is no longer this mapping's
    /// (like a kernel pointer into a user page taken without get_user_pages). A writable span of a private page
    /// shared copy-on-write is only handed out after the copy (the write fault is resolved first).
    /// </remarks>
    public Span<byte> GetSpan(ulong va, int length, bool write)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if ((ulong)VirtualAddress.PageOffsetOf(va) + (ulong)length > VirtualAddress.PageSize)
            throw new ArgumentException($"GetSpan: [0x{va:x}, +{length}) crosses a page boundary; use ReadBytes/WriteBytes.", nameof(length));
        byte* p = Translate(va, write ? MemoryAccess.Write : MemoryAccess.Read);
        _kasan?.Check(p, (nuint)length, write, KasanFunction(write ? MemoryAccess.Write : MemoryAccess.Read));
        return new Span<byte>(p, length);
    }

    /// <summary>
    /// Resolves <paramref name="va"/> for <paramref name="access"/> and returns the host address of that byte.
    /// The pointer has the lifetime caveats of <see cref="GetSpan"/>.
    /// </summary>
    public byte* Translate(ulong va, MemoryAccess access)
    {
        byte* result = null;
        TranslateCore(va, access, _userMode, fixup: false, &result);
        return result;
    }

    private protected bool TranslateCore(ulong va, MemoryAccess access, bool user, bool fixup, byte** result)
    {
        ThreadTlb* tlb = CurrentTlb();
        int retries = 0;
        while (true)
        {
            PageFaultErrorCode error = FaultCode(access, user);
            if (VirtualAddress.IsCanonical(va))
            {
                EnterAccess(tlb);
                byte* host = TranslateInRegion(tlb, va, access, user, out error);
                ExitAccess(tlb);
                if (host != null)
                {
                    *result = host;
                    return true;
                }
            }
            if (HandleFault(va, error, fixup) == FaultOutcome.Failed) return false;
            CheckFaultLoop(va, error, ref retries);
        }
    }

    /// <summary>
    /// The one access loop behind every non-TLB-hit access: page by page, TLB then walk inside an access region,
    /// the fault handler outside it, then retry. Returns the number of bytes not done (non-zero only with a fix-up).
    /// </summary>
    private protected long Access(ulong va, byte* buffer, long length, CopyOp op, byte fill, MemoryAccess access, bool user, bool fixup)
    {
        if (length <= 0) return 0;
        ThreadTlb* tlb = CurrentTlb();
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, VirtualAddress.PageSize - (long)VirtualAddress.PageOffsetOf(va));
            int retries = 0;
            while (true)
            {
                PageFaultErrorCode error = FaultCode(access, user);
                if (VirtualAddress.IsCanonical(va))
                {
                    EnterAccess(tlb);
                    byte* host = TranslateInRegion(tlb, va, access, user, out error);
                    if (host != null)
                    {
                        if (_kasan != null && op != CopyOp.Touch && !_kasan.IsAccessible(host, (nuint)chunk))
                        {
                            ExitAccess(tlb);
                            _kasan.Check(host, (nuint)chunk, access == MemoryAccess.Write, KasanFunction(access));
                        }
                        switch (op)
                        {
                            case CopyOp.ToBuffer: Buffer.MemoryCopy(host, buffer, chunk, chunk); break;
                            case CopyOp.FromBuffer: Buffer.MemoryCopy(buffer, host, chunk, chunk); break;
                            case CopyOp.Fill: NativeMemory.Fill(host, (nuint)chunk, fill); break;
                        }
                        ExitAccess(tlb);
                        break;
                    }
                    ExitAccess(tlb);
                }
                if (_kasan != null) KasanFault(va, chunk, access, error);
                if (HandleFault(va, error, fixup) == FaultOutcome.Failed) return length;
                CheckFaultLoop(va, error, ref retries);
            }
            va += (ulong)chunk;
            if (buffer != null) buffer += chunk;
            length -= chunk;
        }
        return 0;
    }

    /// <summary>
    /// A fault the handler reports fixed keeps recurring: the tables contradict the areas (e.g. an upper-level entry
    /// changed behind the MMU's back). Fail loudly instead of spinning forever.
    /// </summary>
    private static void CheckFaultLoop(ulong va, PageFaultErrorCode error, ref int retries)
    {
        if (++retries < 1000) return;
        throw new InvalidOperationException(
            $"Page fault loop at 0x{va:x} (error code 0x{(uint)error:x}): the fault handler keeps reporting the fault fixed.");
    }

    private protected static PageFaultErrorCode FaultCode(MemoryAccess access, bool user)
        => (access == MemoryAccess.Write ? PageFaultErrorCode.Write : 0)
        | (access == MemoryAccess.Execute ? PageFaultErrorCode.InstructionFetch : 0)
        | (user ? PageFaultErrorCode.User : 0);
}
