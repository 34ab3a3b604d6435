using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Diagnostics;
using Allocators.Mmu;
using Allocators.PageAlloc;
using Allocators.Physical;
using static Allocators.Tests.PageAlloc.PageTestKit;

namespace Allocators.Tests.PageAlloc;

/// <summary>
/// A <see cref="PageFrame"/> pointer passed to any public call is checked before anything is read at it: a wild
/// pointer (unmapped, on the stack, in a native heap block, misaligned inside the frame array, past its end) gets an
/// exception naming the address and changes nothing, in the flat and in the sparse model.
/// </summary>
public sealed unsafe class WildFrameTests
{
    public enum Wild { Unmapped, Stack, NativeHeap, MisalignedInMemMap, PastTheMemMap, BeforeTheMemMap }

    public static TheoryData<Wild, bool> Cases()
    {
        var data = new TheoryData<Wild, bool>();
        foreach (Wild w in Enum.GetValues<Wild>())
        {
            data.Add(w, false);
            data.Add(w, true);
        }
        return data;
    }

    /// <summary>Runs <paramref name="test"/> with a wild frame pointer of kind <paramref name="kind"/>.</summary>
    private static void WithWildFrame(Wild kind, bool sparse, Action<MemorySystem, nint> test)
    {
        using MemorySystem sys = sparse ? NewSparseSystem(16, 8, 32) : NewSystem(16);
        PageFrame* valid = sys.Pages.AllocPages(Gfp.Kernel, 0);
        _ = sys.Kernel; // built (its page tables allocated) before the snapshot
        long stackWord = 0;
        void* heap = NativeMemory.Alloc(4096);
        NativeMemory.Fill(heap, 4096, 0xff);
        try
        {
            nint wild = kind switch
            {
                Wild.Unmapped => unchecked((nint)0xdead0000),
                Wild.Stack => (nint)(&stackWord),
                Wild.NativeHeap => (nint)heap + 64,
                Wild.MisalignedInMemMap => (nint)valid + 8,
                Wild.PastTheMemMap => BesideAFrameArray(sys, past: true),
                _ => BesideAFrameArray(sys, past: false),
            };
            FreeListState before = Snapshot(sys.Pages);
            test(sys, wild);
            AssertSameState(before, Snapshot(sys.Pages));
        }
        finally
        {
            NativeMemory.Free(heap);
            sys.Pages.FreePages(valid, 0);
        }
    }

    /// <summary>
    /// The frame-sized slot just past the end (or before the start) of a section's frame array that is not a frame
    /// itself: large frame arrays are anonymous mappings, and two sections' arrays may lie back to back.
    /// </summary>
    private static nint BesideAFrameArray(MemorySystem sys, bool past)
    {
        PhysicalMemory memory = sys.Memory;
        for (int s = 0; s < memory.MaxSections; s++)
        {
            if (!memory.IsSectionOnline(s)) continue;
            ulong first = memory.SectionStartPfn(s);
            PageFrame* beside = past ? memory.PfnToPage(first + (ulong)memory.PagesPerSection - 1) + 1 : memory.PfnToPage(first) - 1;
            if (!memory.IsValidFrame(beside)) return (nint)beside;
        }
        throw new InvalidOperationException("Every frame array has another one beside it.");
    }

    private static void Refused(Action call, nint wild)
    {
        Exception e = Assert.ThrowsAny<Exception>(call);
        Assert.True(e is MemoryCorruptionException or ArgumentException, $"{e.GetType().Name}: {e.Message}");
        Assert.Contains($"0x{(nuint)wild:x}", e.Message);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void PageAllocatorCallsRefuseAWildFrame(Wild kind, bool sparse) => WithWildFrame(kind, sparse, (sys, wild) =>
    {
        var page = (PageFrame*)wild;
        PageAllocator pa = sys.Pages;
        Refused(() => pa.FreePages(page, 0), wild);
        Refused(() => pa.FreePages(page, 3), wild);
        Refused(() => pa.FreePage(page), wild);
        Refused(() => pa.PutPage(page), wild);
        Refused(() => pa.GetPage(page), wild);
        Refused(() => pa.SplitPage(page, 1), wild);
        Refused(() => pa.PageRefCount(page), wild);
        Refused(() => pa.PageTableFree(page), wild);
        Refused(() => pa.PageAddress(page), wild);
        Refused(() => sys.Memory.PageAddress(page), wild);
        Refused(() => sys.Memory.PageToPfn(page), wild);
        Assert.False(sys.Memory.IsValidFrame(page));
        Refused(() => pa.ThisThread().FreePages(page, 0), wild);
    });

    [Theory]
    [MemberData(nameof(Cases))]
    public void KernelMappingsRefuseAWildFrame(Wild kind, bool sparse) => WithWildFrame(kind, sparse, (sys, wild) =>
    {
        KernelAddressSpace kernel = sys.Kernel;
        ulong va = VirtualAddress.VmallocStart + (1UL << 40);
        Refused(() => kernel.MapKernelPage(va, (PageFrame*)wild, PteFlags.PageKernel), wild);
        Refused(() => kernel.MapKernelHugePmd(va, (PageFrame*)wild, PteFlags.PageKernel), wild);
        Assert.True(kernel.TranslateToPage(va) == null);
    });

    [Fact]
    public void ValidFramesOfEverySectionAreAccepted()
    {
        using MemorySystem sys = NewSparseSystem(16, 8, 32);
        for (ulong pfn = 0; pfn < sys.Memory.MaxPfn; pfn += 511)
        {
            PageFrame* page = sys.Memory.PfnToPage(pfn);
            if (page == null) continue;
            Assert.True(sys.Memory.IsValidFrame(page));
            Assert.False(sys.Memory.IsValidFrame((PageFrame*)((byte*)page + 1)));
            Assert.Equal(pfn, sys.Memory.PageToPfn(page));
        }
    }
}
