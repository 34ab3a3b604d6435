using System.Runtime.InteropServices;
using Allocators.Threading;

namespace Allocators.Rcu;

/// <summary>
/// One thread's reader record and callback batch (the kernel's per-CPU <c>rcu_data</c> and <c>kfree_rcu_cpu</c>), in
/// native memory owned by a <see cref="ThreadCacheRegistry"/>. Only its thread writes <see cref="Ctr"/>; grace periods
/// read it from other threads. <see cref="Batch"/> is touched by its thread inside <see cref="ThreadCacheHeader.TryEnter"/>
/// and by a drainer that holds the block.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct RcuThread
{
    /// <summary>The registry's header: the busy/drain handshake that lets the callback worker take <see cref="Batch"/>.</summary>
    public ThreadCacheHeader Header;

    /// <summary>
    /// Read-side state: nesting depth in the low <see cref="RcuDomain.NestBits"/> bits, and above them the grace-period
    /// counter the outermost <see cref="RcuDomain.RcuReadLock"/> saw; 0 outside every read section.
    /// </summary>
    public long Ctr;

    /// <summary>The batch this thread appends callbacks to, or null (taken by the worker, or never started).</summary>
    public RcuBatch* Batch;
}

/// <summary>One queued callback: what to call (<see cref="RcuDomain"/> decodes <see cref="Fn"/>) and its argument.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RcuEntry
{
    public nint Fn;
    public nint Arg;
}

/// <summary>
/// A page of queued callbacks (the kernel's <c>kvfree_rcu_bulk_data</c>: kfree_rcu batches pointers into pages rather
/// than threading an rcu_head through each object). Native memory, one 4 KiB block, linked while it waits.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct RcuBatch
{
    /// <summary>Entries one batch holds: 16-byte header plus 255 entries of 16 bytes = 4096 bytes.</summary>
    public const int Capacity = 255;

    /// <summary>Bytes of one batch.</summary>
    public const int Bytes = 16 + Capacity * 16;

    public RcuBatch* Next;
    public int Count;
    private readonly int _reserved;

    /// <summary>The entry array after the header.</summary>
    public static RcuEntry* Entries(RcuBatch* batch) => (RcuEntry*)(batch + 1);
}
