using Allocators.Rcu;

namespace Allocators.Slab;

/// <summary>kfree_rcu: frees after a grace period, batched in native pages of pointers.</summary>
public sealed unsafe partial class SlabAllocator
{
    /// <summary>The RCU handler that kfrees a batch of pointers (<see cref="KfreeBulk"/>).</summary>
    private nint _kfreeRcuHandler;

    /// <summary>The RCU domain the slab layer defers frees to (the page allocator's).</summary>
    public RcuDomain Rcu => _pages.Rcu;

    /// <summary>
    /// Frees kmalloc memory once every RCU reader that may still see it has left its read section (kfree_rcu, the
    /// one-argument form). The pointer is queued in the calling thread's native batch: no lock, no managed allocation;
    /// the kfree itself runs in bulk on the RCU thread, where misuse (a double free) is reported through
    /// <see cref="RcuDomain.CallbackFailed"/> and the page allocator's misuse event. Null and
    /// <see cref="ZeroSizePointer"/> are ignored.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="p"/> is not in this allocator's arena.</exception>
    public void KfreeRcu(void* p)
    {
        if ((nuint)p <= (nuint)ZeroSizePointer) return;
        if (_memory.VirtToPage(p) == null) ThrowNotOurs(p);
        _pages.Rcu.Enqueue(_kfreeRcuHandler, (nint)p);
    }

    private static void ThrowNotOurs(void* p)
        => throw new ArgumentException($"kfree_rcu: 0x{(nuint)p:x} is not memory of this allocator's arena.", nameof(p));

    /// <summary>Dispose: the frees queued so far run now (rcu_barrier), while the caches still take them.</summary>
    private void ShutRcu()
    {
        if (_kfreeRcuHandler == 0) return;
        if (!_pages.Rcu.InReadSection) _pages.Rcu.RcuBarrier();
        _pages.Rcu.UnregisterHandler(_kfreeRcuHandler);
        _kfreeRcuHandler = 0;
    }
}
