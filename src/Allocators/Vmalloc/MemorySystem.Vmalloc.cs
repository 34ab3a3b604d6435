using Allocators.Diagnostics;
using Allocators.Physical;
using Allocators.Vmalloc;

namespace Allocators;

public sealed unsafe partial class MemorySystem
{
    partial void AddVmalloc(ref MeminfoValues values)
    {
        if (!HasVmalloc) return;
        values.VmallocPages = Vmalloc.VmallocPages;
    }
}
