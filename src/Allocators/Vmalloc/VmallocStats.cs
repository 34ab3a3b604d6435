using System.Runtime.InteropServices;
using Allocators.Common;

namespace Allocators.Vmalloc;

/// <summary>
/// vmalloc's state in native memory, found by inspectors through <c>SystemDescriptor.Vmalloc</c>: the counters, the
/// roots of the busy and free area trees, and the call-site names of the areas.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct VmallocStats
{
    public const long MagicValue = 0x324D4C4C414D56; // "VMALLM2"
    public long Magic;
    public long VmallocPages;
    public VmapArea* BusyRoot;
    public VmapArea* FreeRoot;
    public NativeStringTable* CallSites;
    public int VmapAreaSize;
    public int Reserved;
}
