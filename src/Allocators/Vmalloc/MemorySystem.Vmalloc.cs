using Allocators.Diagnostics;
using Allocators.Physical;
using Allocators.Vmalloc;

namespace Allocators;

public sealed unsafe partial class MemorySystem
{
    partial void AddVmalloc(ref MeminfoValues values)
    {
        if (!HasVmalloc) return;
        values.VmallocTotalKb = (long)((VmallocAllocator.VmallocSize - 1) >> 10);
        values.VmallocUsedKb = Vmalloc.VmallocPages * (PageFrame.PageSize / 1024);
    }
}
