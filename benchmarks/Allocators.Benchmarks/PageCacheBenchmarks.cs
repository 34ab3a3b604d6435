using System.Runtime.InteropServices;
using Allocators.Filemap;
using Allocators.PageAlloc;
using Allocators.Physical;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Microsoft.Win32.SafeHandles;

namespace Allocators.Benchmarks;

/// <summary>
/// Reads of one 256 MiB file through the page cache (<see cref="FileMapping.Read"/>) against <see cref="RandomAccess.Read(SafeFileHandle, Span{byte}, long)"/>
/// on the same file (pread, served from the host kernel's page cache), in groups (categories):
/// <list type="bullet">
/// <item>Random4K: 1024 reads of 4 KiB at random page-aligned offsets per invocation, both caches warm (the whole
/// file cached in the arena, and in the host's page cache); Mean is nanoseconds per read.</item>
/// <item>Seq64K, Seq1M: sequential reads of that size sweeping 64 MiB per invocation, both caches warm, the sweep
/// moving on through the file so no run finds it in the processor's caches; Mean is nanoseconds per read.</item>
/// <item>Cold1M: the whole file read in 1 MiB reads after its pages were dropped from the host's page cache
/// (posix_fadvise DONTNEED; the file is clean) and, for the page cache, from the arena too (DropCaches), so both
/// read the device — the page cache through its readahead (default window, 32 pages) and preadv into its frames.
/// The drops run in an iteration setup, outside the measured read (one read per iteration); Mean is nanoseconds per
/// whole-file read.</item>
/// </list>
/// The pread rows are the baselines.
/// </summary>
[Config(typeof(BenchConfig))]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class PageCacheBenchmarks
{
    private const long FileSize = 256L << 20;
    private const int RandomReads = 1024;
    private const long SweepBytes = 64L << 20;
    private const int PosixFadvDontneed = 4;

    private string _path = null!;
    private MemorySystem _system = null!;
    private FileMapping _file = null!;
    private SafeFileHandle _handle = null!;
    private long[] _randomOffsets = null!;
    private byte[] _buffer = null!;
    private long _sweep;

    /// <summary>Writes the file, opens it both ways and warms both caches with a full read each.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _path = Path.Combine(Path.GetTempPath(), $"allocators-pagecache-bench-{Environment.ProcessId}.bin");
        var chunk = new byte[1 << 20];
        new Random(1).NextBytes(chunk);
        using (var stream = new FileStream(_path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            for (long offset = 0; offset < FileSize; offset += chunk.Length)
            {
                BitConverter.TryWriteBytes(chunk, offset); // every chunk different
                stream.Write(chunk);
            }
            stream.Flush(flushToDisk: true);
        }
        // The whole file fits in the arena with room to spare, so the shrinker never takes a page back.
        // Free page reporting off, as in MmuBenchmarks: a dropped page given back to the host would make the next read
        // pay the host's page fault, measuring the OS rather than the cache.
        _system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 768L << 20 },
            PageAllocator = new PageAllocatorOptions { ReleaseFreeMemory = false },
        });
        _file = _system.PageCache.Open(_path, FileMode.Open, FileAccess.Read);
        _handle = File.OpenHandle(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var random = new Random(2);
        _randomOffsets = new long[RandomReads];
        for (int i = 0; i < RandomReads; i++) _randomOffsets[i] = random.NextInt64(FileSize / 4096) * 4096;
        _buffer = new byte[1 << 20];
        WarmBoth();
        Check();
    }

    /// <summary>Closes everything and deletes the file.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _file.Dispose();
        _system.Dispose();
        _handle.Dispose();
        File.Delete(_path);
    }

    private void WarmBoth()
    {
        for (long offset = 0; offset < FileSize; offset += _buffer.Length)
        {
            _file.Read(offset, _buffer);
            RandomAccess.Read(_handle, _buffer, offset);
        }
    }

    private void Check()
    {
        var ours = new byte[4096];
        var theirs = new byte[4096];
        foreach (long offset in _randomOffsets.Take(16))
        {
            if (_file.Read(offset, ours) != 4096 || RandomAccess.Read(_handle, theirs, offset) != 4096 || !ours.AsSpan().SequenceEqual(theirs))
                throw new InvalidOperationException($"the page cache and pread disagree at {offset}.");
        }
        if (_file.CachedPages != FileSize / 4096)
            throw new InvalidOperationException($"only {_file.CachedPages} of {FileSize / 4096} pages are cached after the warm-up.");
    }

    /// <summary>4 KiB at random offsets through the page cache.</summary>
    [BenchmarkCategory("Random4K"), Benchmark(OperationsPerInvoke = RandomReads)]
    public int Random4KPageCache()
    {
        Span<byte> buffer = _buffer.AsSpan(0, 4096);
        int sum = 0;
        foreach (long offset in _randomOffsets) sum += _file.Read(offset, buffer);
        return sum;
    }

    /// <summary>4 KiB at random offsets with pread.</summary>
    [BenchmarkCategory("Random4K"), Benchmark(Baseline = true, OperationsPerInvoke = RandomReads)]
    public int Random4KPread()
    {
        Span<byte> buffer = _buffer.AsSpan(0, 4096);
        int sum = 0;
        foreach (long offset in _randomOffsets) sum += RandomAccess.Read(_handle, buffer, offset);
        return sum;
    }

    /// <summary>Sequential 64 KiB reads through the page cache.</summary>
    [BenchmarkCategory("Seq64K"), Benchmark(OperationsPerInvoke = (int)(SweepBytes / (64 << 10)))]
    public long Seq64KPageCache() => Sweep(64 << 10, pageCache: true);

    /// <summary>Sequential 64 KiB reads with pread.</summary>
    [BenchmarkCategory("Seq64K"), Benchmark(Baseline = true, OperationsPerInvoke = (int)(SweepBytes / (64 << 10)))]
    public long Seq64KPread() => Sweep(64 << 10, pageCache: false);

    /// <summary>Sequential 1 MiB reads through the page cache.</summary>
    [BenchmarkCategory("Seq1M"), Benchmark(OperationsPerInvoke = (int)(SweepBytes / (1 << 20)))]
    public long Seq1MPageCache() => Sweep(1 << 20, pageCache: true);

    /// <summary>Sequential 1 MiB reads with pread.</summary>
    [BenchmarkCategory("Seq1M"), Benchmark(Baseline = true, OperationsPerInvoke = (int)(SweepBytes / (1 << 20)))]
    public long Seq1MPread() => Sweep(1 << 20, pageCache: false);

    private long Sweep(int size, bool pageCache)
    {
        Span<byte> buffer = _buffer.AsSpan(0, size);
        long total = 0;
        long offset = _sweep;
        for (long done = 0; done < SweepBytes; done += size)
        {
            total += pageCache ? _file.Read(offset, buffer) : RandomAccess.Read(_handle, buffer, offset);
            offset = (offset + size) % FileSize;
        }
        _sweep = offset;
        return total;
    }

    /// <summary>Before each cold page-cache read: the file's pages leave the arena and the host's cache.</summary>
    [IterationSetup(Target = nameof(Cold1MPageCache))]
    public void DropBoth()
    {
        _system.PageCache.DropCaches();
        DropHostCache();
    }

    /// <summary>Before each cold pread: the file's pages leave the host's cache.</summary>
    [IterationSetup(Target = nameof(Cold1MPread))]
    public void DropHost() => DropHostCache();

    /// <summary>The whole file, cold, in 1 MiB reads through the page cache.</summary>
    [BenchmarkCategory("Cold1M"), Benchmark]
    public long Cold1MPageCache()
    {
        long total = 0;
        for (long offset = 0; offset < FileSize; offset += _buffer.Length) total += _file.Read(offset, _buffer);
        return total;
    }

    /// <summary>The whole file, cold, in 1 MiB reads with pread.</summary>
    [BenchmarkCategory("Cold1M"), Benchmark(Baseline = true)]
    public long Cold1MPread()
    {
        long total = 0;
        for (long offset = 0; offset < FileSize; offset += _buffer.Length) total += RandomAccess.Read(_handle, _buffer, offset);
        return total;
    }

    private void DropHostCache()
    {
        int error = posix_fadvise((int)_handle.DangerousGetHandle(), 0, 0, PosixFadvDontneed);
        if (error != 0) throw new InvalidOperationException($"posix_fadvise(DONTNEED) failed with errno {error}.");
    }

    [DllImport("libc", SetLastError = false)]
    private static extern int posix_fadvise(int fd, long offset, long length, int advice);
}
