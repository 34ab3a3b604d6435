namespace Allocators.Mmu;

/// <summary>The x86 page-fault error code pushed by the CPU (<c>X86_PF_*</c>).</summary>
[Flags]
public enum PageFaultErrorCode : uint
{
    /// <summary>Read access to a not-present page in kernel mode.</summary>
    None = 0,
    /// <summary>Set: protection violation on a present page; clear: the page was not present (X86_PF_PROT).</summary>
    Protection = 1 << 0,
    /// <summary>The access was a write (X86_PF_WRITE).</summary>
    Write = 1 << 1,
    /// <summary>The access came from user mode (X86_PF_USER).</summary>
    User = 1 << 2,
    /// <summary>A reserved bit was set in an entry (X86_PF_RSVD).</summary>
    ReservedBit = 1 << 3,
    /// <summary>The access was an instruction fetch (X86_PF_INSTR).</summary>
    InstructionFetch = 1 << 4,
    /// <summary>Protection-key violation (X86_PF_PK).</summary>
    ProtectionKey = 1 << 5,
}

/// <summary>The kind of a memory access.</summary>
public enum MemoryAccess
{
    /// <summary>A data read.</summary>
    Read,
    /// <summary>A data write.</summary>
    Write,
    /// <summary>An instruction fetch.</summary>
    Execute,
}

/// <summary>The <c>si_code</c> of a SIGSEGV.</summary>
public enum SegvCode
{
    /// <summary>No mapping at the address (SEGV_MAPERR = 1).</summary>
    MapError = 1,
    /// <summary>A mapping exists but forbids the access (SEGV_ACCERR = 2).</summary>
    AccessError = 2,
    /// <summary>Raised by the kernel itself, e.g. a general-protection fault (SI_KERNEL = 0x80).</summary>
    Kernel = 0x80,
}
