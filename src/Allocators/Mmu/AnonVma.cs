namespace Allocators.Mmu;

/// <summary>
/// The reverse map of anonymous memory (mm/rmap.c's anon_vma): the family of address spaces that may map an
/// anonymous page — a process and every process forked from it, since fork shares private pages copy-on-write. A page
/// records its family's <see cref="Id"/> and its linear index (the area's vm_pgoff plus its page offset in the area,
/// kept across mremap), so reclaim finds every entry that maps it by visiting the family's address spaces.
/// </summary>
/// <remarks>
/// One family per process tree rather than the kernel's chain of anon_vmas per area: a walk may visit address spaces
/// that do not map the page (it checks each entry's pfn), never misses one that does. Members change under
/// <c>_lock</c>; walkers read the member array without it.
/// </remarks>
internal sealed class AnonVma
{
    private readonly Lock _lock = new();
    private AddressSpace[] _members = [];

    public AnonVma(int id) => Id = id;

    /// <summary>The number pages store to find their family (<see cref="KernelAddressSpace.AnonVmaOf"/>).</summary>
    public int Id { get; }

    /// <summary>The address spaces of the family, as of the call.</summary>
    public AddressSpace[] Members => Volatile.Read(ref _members);

    /// <summary>anon_vma_fork: <paramref name="mm"/> joins the family.</summary>
    public void Add(AddressSpace mm)
    {
        lock (_lock) Volatile.Write(ref _members, [.. _members, mm]);
    }

    /// <summary>unlink_anon_vmas: <paramref name="mm"/> leaves; true when the family is now empty.</summary>
    public bool Remove(AddressSpace mm)
    {
        lock (_lock)
        {
            Volatile.Write(ref _members, Array.FindAll(_members, m => !ReferenceEquals(m, mm)));
            return _members.Length == 0;
        }
    }
}
