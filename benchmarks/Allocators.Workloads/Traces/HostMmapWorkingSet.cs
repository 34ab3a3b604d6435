using System.IO.MemoryMappedFiles;

namespace Allocators.Workloads.Traces;

/// <summary>
/// The host's answer to the same access pattern: a real temporary file of the footprint's size mapped with
/// <see cref="MemoryMappedFile"/>, each touch reading or writing one 8-byte stamp in its page. It is swap-less: the
/// OS page cache backs the mapping, so with enough RAM nothing is paged out and the faults are mostly minor (the
/// first touch of each page); its major faults come from the kernel's counter for the whole process.
/// </summary>
internal sealed unsafe class HostMmapWorkingSet : IPagedMemory, IDisposable
{
    private const ulong StampKey = 0xC0FF_EE00_5EED_F00DUL;
    private readonly string _path;
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly bool[] _written;
    private readonly long _majorAtStart;

    /// <summary>Creates and maps a zero-filled temporary file of <paramref name="pages"/> pages (deleted on dispose).</summary>
    public HostMmapWorkingSet(int pages)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pages, 1);
        Pages = pages;
        PageSize = Environment.SystemPageSize;
        _path = Path.Combine(Path.GetTempPath(), $"allocators-traces-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        _file = MemoryMappedFile.CreateFromFile(_path, FileMode.CreateNew, null, (long)pages * PageSize, MemoryMappedFileAccess.ReadWrite);
        _view = _file.CreateViewAccessor(0, (long)pages * PageSize, MemoryMappedFileAccess.ReadWrite);
        byte* pointer = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        _base = pointer + _view.PointerOffset;
        _written = new bool[pages];
        _majorAtStart = ProcessFaults.Major();
    }

    /// <summary>Pages in the file.</summary>
    public int Pages { get; }

    /// <summary>The host's page size.</summary>
    public int PageSize { get; }

    /// <summary>Stamps that read back wrong so far (0 unless the mapping lost data).</summary>
    public long StampErrors { get; private set; }

    /// <inheritdoc/>
    public string Name => "host mmap";

    /// <inheritdoc/>
    /// <remarks>The kernel counts for the whole process, so other threads' faults are included (few in a bench run).</remarks>
    public long MajorFaults => ProcessFaults.Major() - _majorAtStart;

    /// <inheritdoc/>
    public void Touch(int page, bool write)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)page, (uint)Pages, nameof(page));
        ulong* stamp = (ulong*)(_base + (long)page * PageSize);
        ulong expected = (ulong)page ^ StampKey;
        if (write)
        {
            *stamp = expected;
            _written[page] = true;
        }
        else
        {
            // A page never written must still read as the file's zeros.
            ulong value = *stamp;
            if (value != (_written[page] ? expected : 0)) StampErrors++;
        }
    }

    /// <summary>Checks every written page's stamp once more; returns the number that are wrong.</summary>
    public long Verify()
    {
        long bad = 0;
        for (int p = 0; p < Pages; p++)
            if (_written[p] && *(ulong*)(_base + (long)p * PageSize) != ((ulong)p ^ StampKey)) bad++;
        return bad;
    }

    /// <summary>Unmaps and deletes the file.</summary>
    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
            // A leftover temporary file is not worth failing the benchmark over.
        }
    }
}

/// <summary>The process's fault counters from /proc/self/stat (0 where it does not exist).</summary>
internal static class ProcessFaults
{
    /// <summary>Major faults of the process so far (field 12 of /proc/self/stat).</summary>
    public static long Major() => Field(12);

    /// <summary>Minor faults of the process so far (field 10 of /proc/self/stat).</summary>
    public static long Minor() => Field(10);

    private static long Field(int number)
    {
        try
        {
            string stat = File.ReadAllText("/proc/self/stat");
            // The command name (field 2) may hold spaces: count fields after its closing parenthesis, where field 3 starts.
            string[] rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(rest[number - 3], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return 0;
        }
    }
}
