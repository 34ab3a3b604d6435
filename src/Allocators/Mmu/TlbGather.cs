namespace Allocators.Mmu;

/// <summary>
/// The mmu_gather of one unmap: the range whose translations must be flushed and the pages and page tables that may
/// only be freed after that flush (no thread may still reach them through a stale TLB entry or a running walk).
/// </summary>
internal sealed class TlbGather
{
    /// <summary>Pages gathered before a flush and release midway (bounds the list, like the kernel's batches).</summary>
    public const int BatchPages = 1024;

    public ulong Start = ulong.MaxValue;
    public ulong End;
    public readonly List<nint> Pages = new();
    public readonly List<nint> Tables = new();

    public bool NeedsFlush => End > Start;

    public void AddRange(ulong start, ulong end)
    {
        if (start < Start) Start = start;
        if (end > End) End = end;
    }
}
