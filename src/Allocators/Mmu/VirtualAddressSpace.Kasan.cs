using Allocators.Kasan;

namespace Allocators.Mmu;

public abstract unsafe partial class VirtualAddressSpace
{
    /// <summary>
    /// The arena's KASAN shadow when the checked mode is on; otherwise null. With it every access goes through the
    /// checked access loop (no TLB-hit path, see RegisterTlb) and checks the bytes it reaches after translation.
    /// </summary>
    private protected readonly KasanShadow? _kasan;

    /// <summary>The function a KASAN report names for an access through this space.</summary>
    private protected string KasanFunction(MemoryAccess access)
        => $"{GetType().Name}.{(access == MemoryAccess.Write ? "Write" : access == MemoryAccess.Execute ? "Fetch" : "Read")}";

    /// <summary>Called with KASAN on before a fault is handled: a space whose faults can mean a KASAN bug reports it here.</summary>
    private protected virtual void KasanFault(ulong va, long size, MemoryAccess access, PageFaultErrorCode error)
    {
    }
}
