using System.Runtime.InteropServices;

namespace Allocators.Vmalloc;

/// <summary>vmalloc counters in native memory, found by inspectors through <c>SystemDescriptor.Vmalloc</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VmallocStats
{
    public const long MagicValue = 0x534D4C4C414D56; // "VMALLMS"
    public long Magic;
    public long VmallocPages;
}
