using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>A temporary directory for real files and a system whose page cache they go through; both gone after each test.</summary>
public abstract class PageCacheTestBase : IDisposable
{
    private protected readonly string _dir;
    private protected readonly MemorySystem _system;

    /// <summary>A system with an arena of <paramref name="arenaBytes"/>; no periodic flusher unless <paramref name="flusher"/>.</summary>
    private protected PageCacheTestBase(long arenaBytes = 16L << 20, bool flusher = false)
    {
        _dir = Directory.CreateTempSubdirectory("allocators-pc-").FullName;
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = arenaBytes },
            PageCache = flusher ? new PageCacheOptions() : new PageCacheOptions { DirtyWritebackInterval = TimeSpan.Zero },
        });
    }

    public void Dispose()
    {
        _system.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Random bytes from a seed.</summary>
    private protected static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
