using System.Runtime.InteropServices;
using Allocators.Common;
using Allocators.Native;

namespace Allocators.Swap;

/// <summary>
/// The swap devices of one memory system (swap_info[] and swap_avail_heads, mm/swapfile.c). Swapon adds a device
/// under the lowest free type; allocation tries the devices by priority, highest first, taking turns among equal
/// priorities; swapoff has the caller bring every page back before the device goes. Thread-safe: swapon and swapoff
/// serialize on one lock, and allocation reads an immutable snapshot of the devices in priority order.
/// </summary>
public sealed class SwapTable : IDisposable
{
    /// <summary>The largest priority swapon accepts (SWAP_FLAG_PRIO_MASK).</summary>
    public const int MaxPriority = 0x7fff;

    private const int Ebusy = 16;
    private const int Eperm = 1;
    private const int Einval = 22;

    private readonly Lock _lock = new();
    private readonly SwapDevice?[] _byType = new SwapDevice?[SwapEntry.MaxSwapFiles];
    private volatile SwapDevice[] _avail = [];   // writable devices, priority descending, then by swapon order
    private int _leastPriority = -1;             // least_priority: the last default priority handed out
    private uint _rotor;                          // turns among devices of equal priority (swap_avail_head requeue)
    private bool _disposed;

    /// <summary>
    /// Starts swapping to the swap file at <paramref name="path"/> (swapon(2)): checks its header and that it has no
    /// holes, and gives it <paramref name="priority"/> (0..32767), or when that is -1 the next default priority: -2,
    /// -3, ... (below every device added without one).
    /// </summary>
    /// <exception cref="InvalidOperationException">The file is already a swap device (EBUSY), or there are 32 already (EPERM).</exception>
    /// <exception cref="ArgumentOutOfRangeException">The priority is neither -1 nor 0..32767.</exception>
    /// <exception cref="InvalidDataException">The file is not a usable swap area (bad signature or version, empty, shorter than its header says, holes).</exception>
    /// <exception cref="IOException">The file could not be opened or read.</exception>
    public SwapDevice Swapon(string path, int priority = -1)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (priority is < -1 or > MaxPriority)
            throw new ArgumentOutOfRangeException(nameof(priority), priority, $"swapon: {path}: a priority is 0..{MaxPriority}, or -1 for the default.");
        string full = Path.GetFullPath(path);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            int type = Array.IndexOf(_byType, null);
            if (type < 0)
                throw new InvalidOperationException($"swapon: {full}: {SwapEntry.MaxSwapFiles} swap devices already (MAX_SWAPFILES): {Errno.Name(Eperm)}.");
            foreach (SwapDevice? other in _byType)
                if (other != null && SameFile(other.Path, full))
                    throw new InvalidOperationException($"swapon: {full}: {Errno.Name(Ebusy)} ({Errno.Message(Ebusy)}): already swapped on as type {other.Type}.");
            var device = new SwapDevice(full, type, priority >= 0 ? priority : _leastPriority - 1);
            if (priority < 0) _leastPriority--;
            _byType[type] = device;
            Publish();
            return device;
        }
    }

    /// <summary>
    /// Stops swapping to <paramref name="path"/> (swapoff(2)): no new slots are handed out from it, then
    /// <paramref name="unuse"/> must bring every page it holds back into memory (try_to_unuse, the MMU's page walk) and
    /// return true; then the device is closed and removed. Devices with default priorities below it move up by one.
    /// </summary>
    /// <exception cref="ArgumentException">No swap device has that path (EINVAL).</exception>
    /// <exception cref="OutOfMemoryException"><paramref name="unuse"/> returned false (ENOMEM): the device is writable again and stays.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="unuse"/> returned true but slots are still in use; the device stays.</exception>
    public void Swapoff(string path, Func<SwapDevice, bool> unuse)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(unuse);
        string full = Path.GetFullPath(path);
        SwapDevice device;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            device = Array.Find(_byType, d => d != null && d.WriteOk && SameFile(d.Path, full))
                ?? throw new ArgumentException($"swapoff: {full}: {Errno.Name(Einval)}: not an active swap device.", nameof(path));
            device.WriteOk = false;
            Publish();
        }

        bool unused = false;
        try
        {
            unused = unuse(device);
        }
        finally
        {
            if (!unused || device.UsedPages != 0) Reinsert(device);
        }
        if (!unused)
            throw new OutOfMemoryException($"swapoff: {full}: Cannot allocate memory (ENOMEM): {device.UsedPages} pages could not be brought back; the device stays on.");
        if (device.UsedPages != 0)
            throw new InvalidOperationException($"swapoff: {full}: {device.UsedPages} slots still in use after try_to_unuse; the device stays on.");

        lock (_lock)
        {
            _byType[device.Type] = null;
            if (device.Priority < 0)
            {
                // The kernel's swapoff moves every default-priority device below this one up, and takes the priority back.
                foreach (SwapDevice? other in _byType)
                    if (other != null && other.Priority < device.Priority) other.Priority++;
                _leastPriority++;
            }
            Publish();
        }
        device.Dispose();
    }

    /// <summary>Usable slots of every device (SwapTotal, in pages).</summary>
    public long TotalPages => Sum(d => d.Pages);

    /// <summary>Unused slots of every device (SwapFree, in pages).</summary>
    public long FreePages => Sum(d => d.Pages - d.UsedPages);

    /// <summary>The devices, by type.</summary>
    public IReadOnlyList<SwapDevice> Devices
    {
        get
        {
            lock (_lock) return [.. _byType.Where(d => d != null)!];
        }
    }

    /// <summary>
    /// A free slot from the highest-priority device that has one (get_swap_pages), taking turns among devices of equal
    /// priority; none when every device is full or none is writable. The slot's map is SwapHasCache with no PTE.
    /// </summary>
    internal SwapEntry GetSwapPage()
    {
        SwapDevice[] avail = _avail;
        for (int first = 0; first < avail.Length;)
        {
            int end = first + 1;
            while (end < avail.Length && avail[end].Priority == avail[first].Priority) end++;
            int n = end - first;
            uint start = n == 1 ? 0 : Interlocked.Increment(ref _rotor) % (uint)n;
            for (int k = 0; k < n; k++)
            {
                SwapEntry entry = avail[first + (int)((start + (uint)k) % (uint)n)].GetSwapPage();
                if (!entry.IsNone) return entry;
            }
            first = end;
        }
        return default;
    }

    /// <summary>The device an entry belongs to (swp_swap_info), by its type.</summary>
    /// <exception cref="MemoryCorruptionException">No device has that type ("Bad swap file entry").</exception>
    internal SwapDevice DeviceOf(SwapEntry entry)
        => Volatile.Read(ref _byType[entry.Type])
            ?? throw new MemoryCorruptionException($"swap_info_get: Bad swap file entry {entry.Value:x8} (no swap device of type {entry.Type}).");

    /// <summary>/proc/swaps: the header, then one line per device by type, exactly as swap_show prints it.</summary>
    public string ProcSwaps()
    {
        SwapDevice[] devices;
        lock (_lock) devices = [.. _byType.Where(d => d != null)!];
        return ProcSwapsText.Format(devices);
    }

    /// <summary>Closes every device (the memory system is going away; no thread may still use its swap).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _avail = [];
            for (int i = 0; i < _byType.Length; i++)
            {
                _byType[i]?.Dispose();
                _byType[i] = null;
            }
        }
    }

    private void Reinsert(SwapDevice device)
    {
        lock (_lock)
        {
            device.WriteOk = true;
            Publish();
        }
    }

    /// <summary>Rebuilds the allocation order from the writable devices. Under the lock.</summary>
    private void Publish()
        => _avail = [.. _byType.Where(d => d is { WriteOk: true }).OrderByDescending(d => d!.Priority).ThenBy(d => d!.Type)!];

    private long Sum(Func<SwapDevice, long> value)
    {
        lock (_lock) return _byType.Where(d => d != null).Sum(d => value(d!));
    }

    /// <summary>The same file: the same path, or the same inode under another name (the kernel marks the inode S_SWAPFILE).</summary>
    private static unsafe bool SameFile(string a, string b)
    {
        if (a == b) return true;
        if (!OperatingSystem.IsLinux()) return false;
        return Identity(a) is { } x && Identity(b) is { } y && x == y;
    }

    private static unsafe (ulong Dev, ulong Ino)? Identity(string path)
    {
        try
        {
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            byte* stat = stackalloc byte[256];
            bool added = false;
            file.DangerousAddRef(ref added);
            try
            {
                if (Libc.Fstat((int)file.DangerousGetHandle(), stat) != 0) return null;
            }
            finally
            {
                if (added) file.DangerousRelease();
            }
            return (*(ulong*)stat, *(ulong*)(stat + 8));
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
