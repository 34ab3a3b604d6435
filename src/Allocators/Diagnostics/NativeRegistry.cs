using System.Runtime.InteropServices;
using Allocators.PageAlloc;
using Allocators.Physical;
using Allocators.Slab;

using Allocators.Common;

namespace Allocators.Diagnostics;

/// <summary>
/// What an out-of-process inspector needs to find one memory system's native metadata (like the kernel's
/// vmcoreinfo): pointers to the zones, sections, slab cache list and call-site names, and the sizes of the structs
/// so a reader can refuse a layout it does not know.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SystemDescriptor
{
    public const ulong MagicValue = 0x31_5359534F4C4C41; // "ALLOSYS1"
    public const int CurrentVersion = 3;

    public ulong Magic;
    public int Version;
    public int Id;
    public int NodeCount;
    public int ZoneCount;
    public int PageFrameSize;
    public int ZoneDataSize;
    public int KmemCacheDataSize;
    public int KmemCacheNodeSize;
    public int MemSectionSize;
    public int MaxSections;
    public ZoneData* Zones;
    public MemSection* Sections;
    public KmemCacheData** SlabCaches;
    public NativeStringTable* CallSites;
    public long PagesPerSection;
    public nint Vmalloc;
    public long* PercpuPages;
    public nint HighMem;             // 1 when the arena has a low/high split (meminfo's HighTotal lines), else 0
}

/// <summary>The root an inspector finds through the static field <see cref="NativeRegistry.Root"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct RegistryRoot
{
    public const ulong MagicValue = 0x544F4F52_434F4C41; // "ALOCROOT"
    public ulong Magic;
    public int Version;
    public int Count;
    public int Capacity;
    public int Pad;
    public SystemDescriptor** Systems;
}

/// <summary>
/// Process-wide native registry of memory systems. Its address sits in a static field so a debugger or ClrMD
/// (<c>allocators inspect</c>) can find every system's metadata without running code in the process.
/// </summary>
internal static unsafe class NativeRegistry
{
    private static readonly Lock s_lock = new();

    /// <summary>Address of the <see cref="RegistryRoot"/>; read by inspectors (do not rename).</summary>
    internal static nint Root;

    public static SystemDescriptor* Register(PhysicalMemory memory, PageAllocator pages, SlabAllocator slab, Percpu.PercpuAllocator percpu)
    {
        var d = (SystemDescriptor*)NativeMemory.AllocZeroed((nuint)sizeof(SystemDescriptor));
        d->Magic = SystemDescriptor.MagicValue;
        d->Version = SystemDescriptor.CurrentVersion;
        d->Id = pages.Id;
        d->NodeCount = pages.NodeCount;
        d->ZoneCount = pages.Zones.Count;
        d->PageFrameSize = sizeof(PageFrame);
        d->ZoneDataSize = sizeof(ZoneData);
        d->KmemCacheDataSize = sizeof(KmemCacheData);
        d->KmemCacheNodeSize = sizeof(KmemCacheNode);
        d->MemSectionSize = sizeof(MemSection);
        d->MaxSections = memory.MaxSections;
        d->Zones = pages.ZoneArray;
        d->Sections = memory.SectionArray;
        d->SlabCaches = slab.NativeCacheList;
        d->CallSites = slab.CallSites.Native;
        d->PagesPerSection = memory.PagesPerSection;
        d->PercpuPages = percpu.NativeNrPages;
        d->HighMem = pages.HasHighMem ? 1 : 0;
        lock (s_lock)
        {
            var root = (RegistryRoot*)Root;
            if (root == null)
            {
                root = (RegistryRoot*)NativeMemory.AllocZeroed((nuint)sizeof(RegistryRoot));
                root->Magic = RegistryRoot.MagicValue;
                root->Version = SystemDescriptor.CurrentVersion;
                root->Capacity = 16;
                root->Systems = (SystemDescriptor**)NativeMemory.AllocZeroed(16, (nuint)sizeof(nint));
                Root = (nint)root;
            }
            if (root->Count == root->Capacity)
            {
                int capacity = root->Capacity * 2;
                var systems = (SystemDescriptor**)NativeMemory.AllocZeroed((nuint)capacity, (nuint)sizeof(nint));
                Buffer.MemoryCopy(root->Systems, systems, capacity * sizeof(nint), root->Count * sizeof(nint));
                root->Systems = systems; // the old array is leaked on purpose: an inspector may be reading it
                root->Capacity = capacity;
            }
            root->Systems[root->Count++] = d;
        }
        return d;
    }

    public static void Unregister(SystemDescriptor* d)
    {
        lock (s_lock)
        {
            var root = (RegistryRoot*)Root;
            for (int i = 0; i < root->Count; i++)
            {
                if (root->Systems[i] != d) continue;
                root->Systems[i] = root->Systems[root->Count - 1];
                root->Systems[--root->Count] = null;
                break;
            }
            d->Magic = 0;
        }
    }
}
