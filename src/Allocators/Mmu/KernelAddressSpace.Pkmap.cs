using Allocators.Physical;

namespace Allocators.Mmu;

public sealed unsafe partial class KernelAddressSpace
{
    /// <summary>The pkmap address of a kmapped high-memory page, or 0.</summary>
    private ulong PkmapAddressOf(PageFrame* page)
    {
        _ = page;
        return 0;
    }
}
