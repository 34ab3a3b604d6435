using Allocators.Swap;

namespace Allocators.Tests.Swap;

/// <summary>A temporary directory for real swap files and a swap table over them; both gone after each test.</summary>
public abstract class SwapTestBase : IDisposable
{
    private protected const int PageSize = 4096;
    private protected readonly string _dir = Directory.CreateTempSubdirectory("allocators-swap-").FullName;
    private protected readonly SwapTable _table = new();

    public void Dispose()
    {
        _table.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A new swap file of <paramref name="pages"/> pages (header included) in the test directory.</summary>
    private protected string Mkswap(string name, long pages)
    {
        string path = Path.Combine(_dir, name);
        SwapDevice.Mkswap(path, pages * PageSize);
        return path;
    }

    /// <summary>A swap device of <paramref name="pages"/> pages, swapped on.</summary>
    private protected SwapDevice Swapon(string name, long pages, int priority = -1) => _table.Swapon(Mkswap(name, pages), priority);

    /// <summary>Every slot's map entry and the cluster list sizes: equal snapshots mean the same allocator state.</summary>
    private protected static (ushort[] Map, int Free, int Nonfull) Snapshot(SwapDevice device)
    {
        var map = new ushort[device.MaxPages];
        for (uint s = 0; s < map.Length; s++) map[s] = device.MapEntry(s);
        return (map, device.FreeClusters, device.NonfullClusters);
    }
}
