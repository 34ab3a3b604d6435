using System.Runtime.InteropServices;

namespace Allocators.Physical;

/// <summary>One memory section: its bytes and its <see cref="PageFrame"/> array (the kernel's <c>mem_section</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MemSection
{
    public byte* Base;
    public PageFrame* MemMap;
    public ulong* Ext;       // PageFrame.ExtWords words per page for the page's owner (page_ext): the slab's bitmaps
    public long Pages;
    public int Node;
    public int Online;
}
