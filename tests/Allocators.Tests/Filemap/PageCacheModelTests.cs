using Allocators.Filemap;
using Allocators.Mmu;
using Allocators.Physical;
using CsCheck;

namespace Allocators.Tests.Filemap;

/// <summary>
/// Random sequences of write/read/truncate/fsync/drop_caches/sync on one real file, and of loads, stores and msync
/// through a shared mapping of it in an address space, checked after every step against a plain byte array: what the
/// cache and the mapping read back, the file's length, the dirty accounting, a bus error for a mapped page past the
/// end, and the bytes on disk after every fsync, sync and msync and at the end.
/// </summary>
public sealed class PageCacheModelTests : IDisposable
{
    private const int MaxSize = 256 << 10;
    private const int MaxWrite = 3 * 4096 + 100;

    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-pcm-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public enum Kind { Write, Read, Truncate, Fsync, DropCaches, Sync, MapWrite, MapRead, Msync }

    public readonly record struct Op(Kind Kind, int Offset, int Length, int Seed)
    {
        public override string ToString() => $"{Kind}(offset {Offset}, length {Length})";
    }

    // Page boundaries and the bytes either side of them are where the partial-page paths are.
    private static readonly Gen<int> GenOffset = Gen.Frequency(
        (3, Gen.Int[0, MaxSize]),
        (1, Gen.Int[0, MaxSize / 4096].Select(p => p * 4096)),
        (1, Gen.Int[1, MaxSize / 4096].Select(p => p * 4096 - 1)),
        (1, Gen.Int[0, 8192]));

    private static readonly Gen<Op> GenOp =
        Gen.Select(
                Gen.Frequency((6, Gen.Const(Kind.Write)), (3, Gen.Const(Kind.Read)), (2, Gen.Const(Kind.Truncate)),
                    (1, Gen.Const(Kind.Fsync)), (2, Gen.Const(Kind.DropCaches)), (1, Gen.Const(Kind.Sync)),
                    (4, Gen.Const(Kind.MapWrite)), (2, Gen.Const(Kind.MapRead)), (1, Gen.Const(Kind.Msync))),
                GenOffset, Gen.Int[1, MaxWrite], Gen.Int)
            .Select((k, offset, length, seed) => new Op(k, offset, length, seed));

    [Fact]
    public void RandomSequencesMatchAByteArrayModel()
    {
        GenOp.Array[1, 50].Sample(ops => Run(ops, flusher: false), iter: 100, threads: 2);
    }

    /// <summary>The same with the flusher writing every dirty page back as soon as it can, between and during the steps.</summary>
    [Fact]
    public void RandomSequencesMatchTheModelWithTheFlusherRacing()
    {
        GenOp.Array[1, 50].Sample(ops => Run(ops, flusher: true), iter: 40, threads: 2);
    }

    private void Run(Op[] ops, bool flusher)
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
            // Without the flusher the sequence alone decides what is dirty, so a failure replays the same way.
            PageCache = flusher
                ? new PageCacheOptions { DirtyExpire = TimeSpan.Zero, DirtyWritebackInterval = TimeSpan.FromMilliseconds(1) }
                : new PageCacheOptions { DirtyWritebackInterval = TimeSpan.Zero },
        });
        PageCache cache = system.PageCache;
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        var model = new byte[MaxSize + MaxWrite];
        int length = 0;
        const ulong MapBytes = (MaxSize + MaxWrite + 4095) / 4096 * 4096;
        using (FileMapping file = cache.Open(path))
        using (AddressSpace mm = system.CreateAddressSpace())
        {
            ulong map = mm.Mmap(0, MapBytes, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            foreach (Op op in ops)
            {
                switch (op.Kind)
                {
                    case Kind.MapWrite:
                    case Kind.MapRead:
                    {
                        // Inside the file: the mapping is the file. A page wholly past the end: a bus error.
                        int n = Math.Min(op.Length, length - op.Offset);
                        if (n <= 0)
                        {
                            if ((long)op.Offset >= (length + 4095L) / 4096 * 4096)
                                Assert.Throws<BusErrorException>(() => mm.Read<byte>(map + (ulong)op.Offset));
                            break;
                        }
                        if (op.Kind == Kind.MapWrite)
                        {
                            var data = new byte[n];
                            new Random(op.Seed).NextBytes(data);
                            mm.WriteBytes(map + (ulong)op.Offset, data);
                            data.CopyTo(model, op.Offset);
                            if (!flusher) Assert.True(cache.Statistics.DirtyPages > 0);
                        }
                        else
                        {
                            var buffer = new byte[n];
                            mm.ReadBytes(map + (ulong)op.Offset, buffer);
                            Assert.True(buffer.AsSpan().SequenceEqual(model.AsSpan(op.Offset, n)), $"mapped read at {op.Offset} differs");
                        }
                        break;
                    }
                    case Kind.Msync:
                        mm.Msync(map, MapBytes, MsyncFlags.Sync);
                        Assert.Equal(0, cache.Statistics.DirtyPages);
                        AssertDisk(path, model, length);
                        break;
                    case Kind.Write:
                    {
                        var data = new byte[op.Length];
                        new Random(op.Seed).NextBytes(data);
                        file.Write(op.Offset, data);
                        data.CopyTo(model, op.Offset);
                        length = Math.Max(length, op.Offset + op.Length);
                        if (!flusher) Assert.True(cache.Statistics.DirtyPages > 0);
                        break;
                    }
                    case Kind.Read:
                    {
                        var buffer = new byte[op.Length];
                        int n = file.Read(op.Offset, buffer);
                        int expected = Math.Clamp(length - op.Offset, 0, op.Length);
                        Assert.Equal(expected, n);
                        Assert.True(buffer.AsSpan(0, n).SequenceEqual(model.AsSpan(op.Offset, n)), $"read at {op.Offset} differs");
                        break;
                    }
                    case Kind.Truncate:
                        file.Truncate(op.Offset);
                        if (op.Offset < length) Array.Clear(model, op.Offset, length - op.Offset);
                        length = op.Offset;
                        Assert.Equal(length, new FileInfo(path).Length);
                        break;
                    case Kind.Fsync:
                        file.Fsync();
                        Assert.Equal(0, cache.Statistics.DirtyPages);
                        AssertDisk(path, model, length);
                        break;
                    case Kind.DropCaches:
                        DropUntilOnlyDirtyPagesStay(cache, file);
                        break;
                    case Kind.Sync:
                        cache.Sync();
                        Assert.Equal(0, cache.Statistics.DirtyPages);
                        AssertDisk(path, model, length);
                        break;
                }
                Assert.Equal(length, file.Length);
                AssertWholeFile(file, model, length);
                if (!flusher) Assert.Equal(0, cache.Statistics.WritebackPages);
                Assert.True(file.CachedPages <= (length + 4095) / 4096, $"{file.CachedPages} pages cached past the end of a {length}-byte file");
                if (!flusher) cache.CheckConsistency(); // holds only while no writeback runs
            }
            file.Fsync();
            AssertDisk(path, model, length);
            mm.Munmap(map, MapBytes);
        }
        Assert.Equal(0, cache.Statistics.FilePages);
        Assert.Equal(0, cache.Statistics.DirtyPages);
    }

    /// <summary>
    /// drop_caches skips pages an async readahead still has locked (as the kernel's does), so it is repeated until
    /// those reads are done; then only dirty pages and pages the mapping maps may stay.
    /// </summary>
    private static void DropUntilOnlyDirtyPagesStay(PageCache cache, FileMapping file)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            cache.DropCaches();
            long kept = cache.Statistics.DirtyPages + cache.Statistics.MappedPages;
            if (file.CachedPages <= kept && (cache.Statistics.MappedPages > 0 || file.CachedPages == cache.Statistics.DirtyPages)) return;
            Assert.True(DateTime.UtcNow < deadline, $"{file.CachedPages} pages stay cached after drops, {cache.Statistics.DirtyPages} dirty, {cache.Statistics.MappedPages} mapped");
            Thread.Sleep(1);
        }
    }

    private static void AssertWholeFile(FileMapping file, byte[] model, int length)
    {
        var buffer = new byte[length + 4096];
        int n = file.Read(0, buffer);
        Assert.Equal(length, n);
        Assert.True(buffer.AsSpan(0, length).SequenceEqual(model.AsSpan(0, length)), "the cached file differs from the model");
    }

    private static void AssertDisk(string path, byte[] model, int length)
    {
        byte[] disk = File.ReadAllBytes(path);
        Assert.Equal(length, disk.Length);
        Assert.True(disk.AsSpan().SequenceEqual(model.AsSpan(0, length)), "the file on disk differs from the model");
    }
}
