namespace Allocators.Physical;

/// <summary>Where the arena's bytes come from.</summary>
public enum ArenaBacking
{
    /// <summary><c>NativeMemory.AlignedAlloc</c>: portable, the default.</summary>
    NativeMemory,
    /// <summary>A Linux memfd mapped with mmap, so its pages can be mapped a second time elsewhere.</summary>
    MemFd,
}

/// <summary>How physical memory is laid out (the kernel's memory models).</summary>
public enum MemoryModel
{
    /// <summary>One section holding all memory (FLATMEM).</summary>
    Flat,
    /// <summary>Sections added and removed at run time (SPARSEMEM with memory hotplug).</summary>
    Sparse,
}
