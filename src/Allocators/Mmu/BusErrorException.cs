namespace Allocators.Mmu;

/// <summary>
/// A user-mode access to a file mapping at a page that lies wholly past the end of the file, or that could not be
/// read (<see cref="Exception.InnerException"/> then holds the I/O error): the SIGBUS a process would receive
/// (<c>si_code</c> BUS_ADRERR). Not a <see cref="SegmentationFaultException"/>: the address is mapped,
/// the object behind it is too short.
/// </summary>
public sealed class BusErrorException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public BusErrorException(ulong address, PageFaultErrorCode errorCode, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Address = address;
        ErrorCode = errorCode;
    }

    /// <summary>The faulting virtual address (si_addr).</summary>
    public ulong Address { get; }

    /// <summary>The signal code: always BUS_ADRERR (2), nonexistent physical address.</summary>
    public int Code => BusAdrErr;

    /// <summary>The page-fault error code of the access.</summary>
    public PageFaultErrorCode ErrorCode { get; }

    /// <summary>BUS_ADRERR.</summary>
    public const int BusAdrErr = 2;

    internal static BusErrorException Create(ulong address, PageFaultErrorCode error, string comm, int pid, string path, ulong index, IOException? readError)
        => new(address, error,
            $"{comm}[{pid}]: bus error at {address:x} error {(uint)error:x} (BUS_ADRERR, {SegmentationFaultException.Describe(error)}): page {index} of {path} "
            + (readError == null ? "is past the end of the file" : $"could not be read: {readError.Message}"), readError);
}
