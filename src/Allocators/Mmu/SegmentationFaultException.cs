namespace Allocators.Mmu;

/// <summary>
/// A user-mode access the fault handler could not resolve: the SIGSEGV a process would receive. Carries the
/// faulting address, the <c>si_code</c> and the x86 error code.
/// </summary>
public class SegmentationFaultException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public SegmentationFaultException(ulong address, SegvCode code, PageFaultErrorCode errorCode, string message)
        : base(message)
    {
        Address = address;
        Code = code;
        ErrorCode = errorCode;
    }

    /// <summary>The faulting virtual address (si_addr).</summary>
    public ulong Address { get; }

    /// <summary>SEGV_MAPERR, SEGV_ACCERR or SI_KERNEL.</summary>
    public SegvCode Code { get; }

    /// <summary>The page-fault error code of the access.</summary>
    public PageFaultErrorCode ErrorCode { get; }

    /// <summary>True when the address lies below mmap_min_addr (64 KiB), where nothing is ever mapped.</summary>
    public bool IsNullPointerDereference => Address < VirtualAddress.MmapMinAddr && Code != SegvCode.Kernel;

    internal static SegmentationFaultException Create(ulong address, SegvCode code, PageFaultErrorCode error, string comm, int pid)
    {
        string what = code == SegvCode.MapError ? "SEGV_MAPERR" : "SEGV_ACCERR";
        string prefix = address < VirtualAddress.MmapMinAddr ? "NULL pointer dereference: " : "";
        return new SegmentationFaultException(address, code, error,
            $"{prefix}{comm}[{pid}]: segfault at {address:x} error {(uint)error:x} ({what}, {Describe(error)})");
    }

    internal static string Describe(PageFaultErrorCode error)
    {
        string who = (error & PageFaultErrorCode.User) != 0 ? "user" : "supervisor";
        string what = (error & PageFaultErrorCode.InstructionFetch) != 0 ? "instruction fetch"
            : (error & PageFaultErrorCode.Write) != 0 ? "write access" : "read access";
        string why = (error & PageFaultErrorCode.Protection) != 0 ? "permissions violation" : "not-present page";
        return $"{who} {what}, {why}";
    }
}

/// <summary>
/// An access to a non-canonical address (bits 63..48 do not copy bit 47). The CPU raises #GP rather than #PF;
/// a user process gets SIGSEGV with <c>si_code</c> SI_KERNEL.
/// </summary>
public sealed class GeneralProtectionFaultException : SegmentationFaultException
{
    /// <summary>Creates the exception for <paramref name="address"/>.</summary>
    public GeneralProtectionFaultException(ulong address, PageFaultErrorCode errorCode)
        : base(address, SegvCode.Kernel, errorCode,
            $"general protection fault, probably for non-canonical address 0x{address:x16}: 0000")
    {
    }
}

/// <summary>
/// A kernel-mode fault that nothing could fix: the kernel would print an oops and kill the task.
/// <see cref="Report"/> holds the report in the kernel's format.
/// </summary>
public sealed class KernelOopsException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public KernelOopsException(ulong address, PageFaultErrorCode errorCode, string report)
        : base(report)
    {
        Address = address;
        ErrorCode = errorCode;
        Report = report;
    }

    /// <summary>The faulting address (CR2).</summary>
    public ulong Address { get; }

    /// <summary>The page-fault error code.</summary>
    public PageFaultErrorCode ErrorCode { get; }

    /// <summary>The oops text: <c>BUG: unable to handle page fault for address</c>, the #PF lines, the walk, <c>Oops:</c>.</summary>
    public string Report { get; }
}
