using System.Globalization;
using System.Text;

namespace Allocators.Mmu;

public sealed unsafe partial class KernelAddressSpace
{
    /// <summary>
    /// Where the kernel's areas lie, as a 32-bit kernel prints its "virtual kernel memory layout" at boot: the fixmap,
    /// the pkmap area, vmalloc and the direct map of low memory (lowmem, up to high_memory).
    /// </summary>
    public string DumpLayout()
    {
        var sb = new StringBuilder("virtual kernel memory layout:\n");
        Line("fixmap", Fixmap.Start, Fixmap.Top + VirtualAddress.PageSize);
        Line("pkmap", PkmapBase, PkmapAddress(LastPkmap));
        Line("vmalloc", VirtualAddress.VmallocStart, VirtualAddress.VmallocEnd + 1);
        Line("lowmem", VirtualAddress.PageOffset, HighMemory);
        return sb.ToString();

        void Line(string name, ulong start, ulong end)
        {
            ulong kb = (end - start) >> 10;
            string size = kb >= 1UL << 20 ? $"{kb >> 20,4} GB" : kb >= 1024 ? $"{kb >> 10,4} MB" : $"{kb,4} kB";
            sb.Append(CultureInfo.InvariantCulture, $"    {name,-8}: 0x{start:x16} - 0x{end:x16}   ({size})\n");
        }
    }
}
