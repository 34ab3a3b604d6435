using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Allocators.Slab;

/// <summary>Which slot sizes the kmalloc caches have (<see cref="SlabAllocatorOptions.KmallocSizeClasses"/>).</summary>
public enum KmallocSizeClasses
{
    /// <summary>
    /// The kernel's: kmalloc-16, 32, 64, 96, 128, 192, 256, 512, 1k, 2k, 4k, 8k (and 16k, 32k here, see
    /// <see cref="SlabAllocator.KmallocMaxCacheSize"/>; no kmalloc-8, as no slab slot is under 16 bytes: a page's
    /// free bitmaps cover at most 256 objects). A request just above a power of
    /// two gets nearly twice its size: random sizes waste about a quarter of every slot on average.
    /// </summary>
    Kernel,

    /// <summary>
    /// Four classes per power of two from 64 bytes up (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320 ...
    /// 28672, 32768: the spacing jemalloc and mimalloc use), so no slot is more than a quarter larger than the largest
    /// request it serves (about a tenth on average for random sizes). Alignment as with <see cref="Kernel"/>: a power-of-two
    /// size is aligned to itself, other sizes to 8 bytes.
    /// </summary>
    Fine,
}

/// <summary>The kmalloc class table: slot sizes and the size-to-class index for 1..<see cref="SlabAllocator.KmallocMaxCacheSize"/> bytes.</summary>
internal static unsafe class KmallocClassTable
{
    /// <summary>Entries of the size-to-class index: one per 8 bytes up to <see cref="SlabAllocator.KmallocMaxCacheSize"/>.</summary>
    public const int IndexEntries = SlabAllocator.KmallocMaxCacheSize / 8;

    /// <summary>The slot sizes, smallest first.</summary>
    public static int[] Sizes(KmallocSizeClasses classes)
    {
        if (classes == KmallocSizeClasses.Kernel) return [16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];
        var sizes = new List<int> { 16, 32, 48, 64 };
        for (int power = 64; power < SlabAllocator.KmallocMaxCacheSize; power *= 2)
        {
            for (int quarter = 5; quarter <= 8; quarter++) sizes.Add(power * quarter / 4);
        }
        return [.. sizes];
    }

    /// <summary>The class of 1..<see cref="SlabAllocator.KmallocMaxCacheSize"/> bytes in a table from <see cref="CreateIndex"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ClassOf(byte* index, nuint size) => index[(size - 1) >> 3];

    /// <summary>
    /// A native table mapping (size - 1) / 8 to the index of the smallest class of <paramref name="sizes"/> that holds
    /// size, for every size up to 32 KiB (the kernel's size_index, extended over the whole kmalloc range so one load
    /// replaces its branch and fls). Free it with <see cref="NativeMemory.Free"/>.
    /// </summary>
    public static byte* CreateIndex(int[] sizes)
    {
        var table = (byte*)NativeMemory.Alloc(IndexEntries);
        int cls = 0;
        for (int i = 0; i < IndexEntries; i++)
        {
            int largest = (i + 1) * 8; // every size in this entry's 8-byte step is at most this
            while (sizes[cls] < largest) cls++;
            table[i] = (byte)cls;
        }
        return table;
    }
}
