using System.Runtime.CompilerServices;

namespace Allocators.Mmu;

/// <summary>
/// The calling thread's view of an address space with its TLB already looked up (like a CPU that has the space
/// loaded in CR3): <see cref="Read{T}"/> and <see cref="Write{T}"/> behave exactly as the space's own methods but
/// skip the thread-local lookup. A ref struct, so it stays on the stack of the thread that created it; do not use it
/// after the space is disposed (it then takes the slow path, which throws <see cref="ObjectDisposedException"/>).
/// </summary>
public readonly unsafe ref struct AddressSpaceAccessor
{
    private readonly VirtualAddressSpace _space;
    private readonly ThreadTlb* _tlb;

    internal AddressSpaceAccessor(VirtualAddressSpace space, ThreadTlb* tlb)
    {
        _space = space;
        _tlb = tlb;
    }

    /// <summary>The address space.</summary>
    public VirtualAddressSpace Space => _space;

    /// <summary>Reads a <typeparamref name="T"/> at <paramref name="va"/>, as <see cref="VirtualAddressSpace.Read{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T Read<T>(ulong va) where T : unmanaged => _space.ReadWith<T>(_space.AccessorTlb(_tlb), va);

    /// <summary>Writes a <typeparamref name="T"/> at <paramref name="va"/>, as <see cref="VirtualAddressSpace.Write{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write<T>(ulong va, T value) where T : unmanaged => _space.WriteWith(_space.AccessorTlb(_tlb), va, value);
}
