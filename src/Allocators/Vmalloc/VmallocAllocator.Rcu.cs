namespace Allocators.Vmalloc;

/// <summary>kvfree_rcu for <see cref="VmallocAllocator.Kvmalloc"/> memory.</summary>
public sealed unsafe partial class VmallocAllocator
{
    private readonly Lock _rcuLock = new();
    private nint _vfreeRcuHandler;

    /// <summary>
    /// Frees memory from <see cref="Kvmalloc"/> once every RCU reader that may still see it has left its read section
    /// (kvfree_rcu, one-argument form): kmalloc memory through <c>SlabAllocator.KfreeRcu</c>, a vmalloc area by a
    /// vfree on the RCU thread. 0 is ignored.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The allocator is disposed.</exception>
    public void KvfreeRcu(ulong address)
    {
        if (address == 0) return;
        if (!IsVmallocAddr(address))
        {
            _slab.KfreeRcu((void*)address);
            return;
        }
        nint handler = Volatile.Read(ref _vfreeRcuHandler);
        if (handler == 0) handler = RegisterVfreeRcu();
        _slab.Rcu.Enqueue(handler, (nint)address);
    }

    private nint RegisterVfreeRcu()
    {
        lock (_rcuLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_vfreeRcuHandler == 0) Volatile.Write(ref _vfreeRcuHandler, _slab.Rcu.RegisterHandler(VfreeBulk));
            return _vfreeRcuHandler;
        }
    }

    private void VfreeBulk(ReadOnlySpan<nint> addresses)
    {
        foreach (nint address in addresses) Vfree((ulong)address);
    }

    /// <summary>Dispose: vfrees queued so far run first (rcu_barrier).</summary>
    private void ShutRcu()
    {
        nint handler;
        lock (_rcuLock) handler = _vfreeRcuHandler;
        if (handler == 0) return;
        if (!_slab.Rcu.InReadSection) _slab.Rcu.RcuBarrier();
        _slab.Rcu.UnregisterHandler(handler);
    }
}
