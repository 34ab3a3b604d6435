using Allocators.Collections;
using Allocators.PageAlloc;
using Allocators.Reclaim;
using Allocators.Swap;

namespace Allocators.Mmu;

public sealed unsafe partial class KernelAddressSpace
{
    private readonly IdTable<AnonVma> _anonVmas = new();
    private readonly IdTable<ShmemObject> _shmem = new();
    private AnonSwap? _swap;
    private readonly Lock _swapLock = new();

    /// <summary>Anonymous memory's reclaim and swap, built on first use (swapon).</summary>
    internal AnonSwap Swap
    {
        get
        {
            if (_swap != null) return _swap;
            lock (_swapLock)
            {
                ObjectDisposedException.ThrowIf(IsDisposed, this);
                return _swap ??= new AnonSwap(this, Pages);
            }
        }
    }

    /// <summary>True once <see cref="Swap"/> exists (a swap PTE can only exist then).</summary>
    internal bool HasSwap => _swap != null;

    /// <summary>
    /// swapon(2): adds the swap file at <paramref name="path"/> (made with <see cref="SwapDevice.Mkswap"/>) with
    /// <paramref name="priority"/> (-1: below every device added so far), and lets reclaim swap anonymous memory to it.
    /// </summary>
    /// <exception cref="ArgumentException">The file is not a usable swap file (bad header, holes, too small), or is on already.</exception>
    public SwapDevice Swapon(string path, int priority = -1) => Swap.Swapon(path, priority);

    /// <summary>swapoff(2): swaps every page on the device back in, then removes it.</summary>
    /// <exception cref="OutOfMemoryException">Memory ran out before everything was back; the device stays on.</exception>
    public void Swapoff(string path) => Swap.Swapoff(path);

    /// <summary>
    /// Proactive reclaim (memory.reclaim): frees up to <paramref name="pages"/> cold LRU pages now, as if memory had run
    /// short. Returns the pages freed; 0 when nothing registered reclaimable pages (no page cache, no swap).
    /// </summary>
    public long Reclaim(long pages) => Pages.Reclaimer is Vmscan vmscan ? vmscan.Reclaim(pages, Gfp.Kernel) : 0;

    /// <summary>/proc/swaps.</summary>
    public string ProcSwaps() => _swap?.Table.ProcSwaps() ?? "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    /// <summary>(SwapTotal, SwapFree, SwapCached) in pages.</summary>
    public (long Total, long Free, long Cached) SwapPages
        => _swap is { } s ? (s.Table.TotalPages, s.Table.FreePages, s.Cache.Pages) : (0, 0, 0);

    /// <summary>Takes anonymous memory away from reclaim (waiting out reclaim in progress), then closes the swap devices.</summary>
    private void DisposeSwap()
    {
        AnonSwap? swap;
        lock (_swapLock) swap = _swap;
        if (swap == null) return;
        if (Pages.Reclaimer is Vmscan vmscan) vmscan.RemoveOwner(swap);
        swap.Dispose();
    }

    /// <summary>The anon_vma family for a new address space: <paramref name="parent"/>'s after fork, else a new one.</summary>
    internal AnonVma JoinAnonVma(AddressSpace mm, AnonVma? parent)
    {
        if (parent != null)
        {
            parent.Add(mm);
            return parent;
        }
        var family = new AnonVma(_anonVmas.NextId());
        family.Add(mm);
        _anonVmas.Add(family.Id, family);
        return family;
    }

    /// <summary><paramref name="mm"/> exited: it leaves its family, which goes when it was the last.</summary>
    internal void LeaveAnonVma(AnonVma family, AddressSpace mm)
    {
        if (family.Remove(mm))
            _anonVmas.Remove(family.Id);
    }

    /// <summary>The family an anonymous page names (page->mapping), or null once every member exited.</summary>
    internal AnonVma? AnonVmaOf(int id) => _anonVmas.Get(id);

    /// <summary>Enters a new shmem object in the table its pages name it by; returns its number.</summary>
    internal int RegisterShmem(ShmemObject shmem)
    {
        int id = _shmem.NextId();
        _shmem.Add(id, shmem);
        return id;
    }

    /// <summary>The shmem object <paramref name="id"/> went (its last mapping did).</summary>
    internal void UnregisterShmem(int id) => _shmem.Remove(id);

    /// <summary>The shmem object a shared anonymous page names (page->mapping), or null once it went.</summary>
    internal ShmemObject? ShmemOf(int id) => _shmem.Get(id);

    /// <summary>The live shmem objects, as of the call (swapoff's shmem_unuse walks them).</summary>
    internal ShmemObject[] ShmemObjects() => _shmem.Values();

    /// <summary>The live processes, as of the call.</summary>
    internal AddressSpace[] Processes()
    {
        lock (_processes) return [.. _processes];
    }
}
