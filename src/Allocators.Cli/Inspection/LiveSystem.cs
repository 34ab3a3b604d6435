using Allocators.PageAlloc;

namespace Allocators.Cli.Inspection;

/// <summary>Builds the inspector's report model from a live system of this process, with the library's own texts.</summary>
internal static class LiveSystem
{
    public static SystemReport Report(MemorySystem system)
    {
        var pages = system.Pages;
        var zones = pages.Zones.Select(z =>
        {
            var blocks = new long[PageAllocator.MaxOrder + 1];
            for (int o = 0; o <= PageAllocator.MaxOrder; o++) blocks[o] = z.FreeBlocks(o);
            return new ZoneReport(z.Node, z.Name, z.FreePages, z.ManagedPages, z.PresentPages, z.SpannedPages,
                z.WatermarkMin, z.WatermarkLow, z.WatermarkHigh, blocks);
        }).ToArray();
        var caches = system.Slab.Caches.Select(c =>
        {
            var s = c.Stats;
            return new CacheReport(c.Name, s.ActiveObjects, s.TotalObjects, c.ObjectSize, c.SlotSize, c.ObjectsPerSlab, 1 << c.Order, s.Slabs, c.Flags.ToString());
        }).ToArray();
        int sections = 0;
        for (int i = 0; i < system.Memory.MaxSections; i++) if (system.Memory.IsSectionOnline(i)) sections++;
        string? vmallocInfo = VmallocInfo(system);
        return new SystemReport(pages.Id, pages.NodeCount, system.Memory.PagesPerSection, sections, zones, caches,
            system.MeminfoItems().Select(i => new MeminfoItem(i.Name, i.Kb)).ToArray(),
            pages.BuddyInfo(), system.Slab.SlabInfo(), system.Meminfo(), null, vmallocInfo);
    }

    /// <summary>The system's /proc/vmallocinfo text, or null when its vmalloc layer was never used (reporting does not build it).</summary>
    public static string? VmallocInfo(MemorySystem system) => system.HasVmalloc ? system.Vmalloc.VmallocInfo() : null;
}
