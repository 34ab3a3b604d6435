using System.Globalization;
using Allocators.Filemap;
using Allocators.Mmu;
using Allocators.Physical;

namespace Allocators.Tests.Mmu;

/// <summary>mmap of page-cache files: shared and private mappings, faults, msync, truncation, i_mmap, maps/smaps.</summary>
public sealed unsafe class FileMmapTests : IDisposable
{
    private const int Page = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("allocators-fmmap-").FullName;
    private readonly MemorySystem _system = new(new MemorySystemOptions { Physical = new PhysicalMemoryOptions { Size = 64L << 20 } });
    private readonly long _free0;

    public FileMmapTests()
    {
        _ = _system.Kernel;
        _system.Pages.DrainAllPages();
        _free0 = _system.Pages.NrFreePages;
    }

    public void Dispose()
    {
        _system.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private PageCache Cache => _system.PageCache;

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>A file on disk with <paramref name="pages"/> pages of a pattern, opened through the page cache (nothing cached yet).</summary>
    private FileMapping NewFile(string name, int pages, int seed, out byte[] data, FileAccess access = FileAccess.ReadWrite)
    {
        string path = Path.Combine(_dir, name);
        data = Pattern(pages * Page, seed);
        File.WriteAllBytes(path, data);
        return Cache.Open(path, FileMode.Open, access);
    }

    private void Check(params AddressSpace[] mms)
    {
        Cache.CheckConsistency();
        foreach (AddressSpace mm in mms) mm.CheckConsistency();
    }

    /// <summary>Every mapping gone and every file closed: nothing is mapped and every page is back.</summary>
    private void AssertAllReleased()
    {
        Assert.Equal(0, Cache.Statistics.MappedPages);
        Assert.Equal(0, _system.Kernel.Statistics.FileMappedPages);
        Assert.Equal(0, Cache.Statistics.FilePages);
        Cache.CheckConsistency();
        _system.Pages.DrainAllPages();
        Assert.Equal(_free0, _system.Pages.NrFreePages);
    }

    /// <summary>Runs <paramref name="body"/> on <paramref name="count"/> threads started together; rethrows the first failure.</summary>
    private static void RunThreads(int count, Action<int> body)
    {
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        using var start = new Barrier(count);
        var threads = Enumerable.Range(0, count).Select(t => new Thread(() =>
        {
            try
            {
                start.SignalAndWait();
                body(t);
            }
            catch (Exception e)
            {
                failures.Enqueue(e);
            }
        })).ToArray();
        foreach (Thread thread in threads) thread.Start();
        foreach (Thread thread in threads) thread.Join();
        if (failures.TryDequeue(out Exception? first)) throw new AggregateException(first);
    }

    private static byte[] ReadUser(AddressSpace mm, ulong va, int length)
    {
        var buffer = new byte[length];
        mm.ReadBytes(va, buffer);
        return buffer;
    }

    [Fact]
    public void SharedMappingWritesAreInTheFileAfterMsyncAndAgainAfterFsync()
    {
        using (FileMapping file = NewFile("shared.bin", 8, 1, out byte[] data))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, 8 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            Assert.Equal(data[..Page], ReadUser(mm, a, Page));
            Assert.False(mm.GetPte(a).Writable); // clean page mapped read-only: the first write must be seen

            byte[] patch = Pattern(3 * Page + 17, 2);
            mm.WriteBytes(a + 100, patch);
            Assert.True(Cache.Statistics.DirtyPages >= 4);
            Assert.True(mm.GetPte(a).Writable && mm.GetPte(a).Dirty);
            mm.Msync(a, 8 * Page, MsyncFlags.Sync);
            patch.CopyTo(data, 100);
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Assert.Equal(0, Cache.Statistics.DirtyPages);
            // Writeback cleaned and write-protected the entries (page_mkclean): the next write faults and dirties again.
            Assert.False(mm.GetPte(a).Writable);
            Assert.False(mm.GetPte(a).Dirty);

            mm.Write<long>(a + 5 * Page + 8, 0x1122334455667788);
            Assert.Equal(1, Cache.Statistics.DirtyPages);
            file.Fsync();
            BitConverter.GetBytes(0x1122334455667788).CopyTo(data, 5 * Page + 8);
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void DirtyDataOfAnExitedProcessStillReachesTheFile()
    {
        using (FileMapping file = NewFile("exit.bin", 4, 3, out byte[] data))
        {
            using (AddressSpace mm = _system.CreateAddressSpace())
            {
                ulong a = mm.Mmap(0, 4 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
                mm.Memset(a + Page, 0xAB, 2 * Page);
                Assert.Equal(2, Cache.Statistics.MappedPages);
            }
            Assert.Equal(0, Cache.Statistics.MappedPages);
            Assert.Equal(0, file.MapperCount);
            file.Fsync();
            Array.Fill(data, (byte)0xAB, Page, 2 * Page);
            Assert.Equal(data, File.ReadAllBytes(file.Path));
        }
        AssertAllReleased();
    }

    [Fact]
    public void TwoAddressSpacesShareTheFilesPages()
    {
        using (FileMapping file = NewFile("two.bin", 4, 4, out byte[] data))
        using (AddressSpace mm1 = _system.CreateAddressSpace())
        using (AddressSpace mm2 = _system.CreateAddressSpace())
        {
            ulong a1 = mm1.Mmap(0, 4 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            ulong a2 = mm2.Mmap(0, 2 * Page, MemoryProtection.Read, MapFlags.Shared, file, 2 * Page);
            Assert.Equal(data[(2 * Page)..(3 * Page)], ReadUser(mm2, a2, Page));
            mm1.Write<long>(a1 + 2 * Page + 16, -42);
            Assert.Equal(-42, mm2.Read<long>(a2 + 16));
            PageFrame* page = mm1.FollowPage(a1 + 2 * Page);
            Assert.True(page == mm2.FollowPage(a2));
            Assert.Equal(2, page->MapCount);
            Assert.Equal(2, Cache.Statistics.MappedPages);
            Assert.Equal(1, mm1.Statistics.RssFile);
            Assert.Equal(1, mm2.Statistics.RssFile);
            Assert.Equal(0, mm1.Statistics.RssAnon);
            // A write through the file is seen by both mappings at once: they map the cache page itself.
            file.Write(2 * Page + 24, BitConverter.GetBytes(7L));
            Assert.Equal(7, mm1.Read<long>(a1 + 2 * Page + 24));
            Assert.Equal(7, mm2.Read<long>(a2 + 24));
            Assert.Contains("Shared_Dirty:          4 kB", mm2.Smaps());
            Check(mm1, mm2);
        }
        AssertAllReleased();
    }

    [Fact]
    public void PrivateMappingSeesTheFileUntilItsFirstWriteAndNeverChangesIt()
    {
        using (FileMapping file = NewFile("private.bin", 4, 5, out byte[] data))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, 4 * Page, MemoryProtection.ReadWrite, MapFlags.Private, file, 0);
            Assert.Equal(data, ReadUser(mm, a, 4 * Page));
            Assert.Equal(4, mm.Statistics.RssFile);
            // Before its first write to a page the mapping sees later changes of the file.
            file.Write(Page, BitConverter.GetBytes(11L));
            Assert.Equal(11, mm.Read<long>(a + Page));

            mm.Write<long>(a + Page + 8, 22);
            Assert.Equal(1, mm.Statistics.CowFaults);
            Assert.Equal(1, mm.Statistics.RssAnon);
            Assert.Equal(3, mm.Statistics.RssFile);
            Assert.Equal(11, mm.Read<long>(a + Page));
            // After it the page is its own: the file's later changes are not seen, its own write is not in the file.
            file.Write(Page, BitConverter.GetBytes(33L));
            Assert.Equal(11, mm.Read<long>(a + Page));
            var cached = new byte[8];
            file.Read(Page + 8, cached);
            Assert.Equal(data[(Page + 8)..(Page + 16)], cached);
            // A write fault on a page never read copies straight from the cache (do_cow_fault).
            mm.Write<byte>(a + 3 * Page, 0x5A);
            Assert.Equal(data[(3 * Page + 1)..(4 * Page)], ReadUser(mm, a + 3 * Page + 1, Page - 1));
            mm.Msync(a, 4 * Page, MsyncFlags.Sync); // private: nothing to write
            file.Fsync();
            BitConverter.GetBytes(33L).CopyTo(data, Page);
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Assert.Contains("Private_Dirty:         8 kB", mm.Smaps());
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void TruncateWhileMappedRemovesThePagesPastTheEndFromEveryMapping()
    {
        long sigbus0 = _system.Kernel.Statistics.BusErrors;
        long segv0 = _system.Kernel.Statistics.SegmentationFaults;
        using (FileMapping file = NewFile("trunc.bin", 8, 6, out byte[] data))
        using (AddressSpace mm1 = _system.CreateAddressSpace())
        using (AddressSpace mm2 = _system.CreateAddressSpace())
        {
            ulong s1 = mm1.Mmap(0, 8 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            ulong p2 = mm2.Mmap(0, 8 * Page, MemoryProtection.ReadWrite, MapFlags.Private, file, 0);
            mm1.Memset(s1, 1, 8 * Page);
            Assert.Equal(1, mm2.Read<byte>(p2 + 6 * Page));
            mm2.Write<byte>(p2 + 7 * Page, 2); // a private copy past the new end: zapped too
            Assert.Equal(8, mm1.Statistics.RssFile);

            file.Truncate(3 * Page + 100);
            for (int i = 4; i < 8; i++)
            {
                ulong off = (ulong)i * Page;
                Assert.True(mm1.FollowPage(s1 + off) == null);
                Assert.True(mm2.FollowPage(p2 + off) == null);
                var e1 = Assert.Throws<BusErrorException>(() => mm1.Read<byte>(s1 + off));
                Assert.Equal(s1 + off, e1.Address);
                Assert.Equal(BusErrorException.BusAdrErr, e1.Code);
                Assert.Throws<BusErrorException>(() => mm2.Write<byte>(p2 + off, 3));
            }
            Assert.Equal(4, mm1.Statistics.RssFile);
            Assert.Equal(0, mm2.Statistics.RssAnon);
            // The last partial page stays; the bytes past the end read as zeros.
            Assert.Equal(1, mm1.Read<byte>(s1 + 3 * Page + 99));
            Assert.Equal(0, mm1.Read<byte>(s1 + 3 * Page + 100));
            // A kernel-mode copy stops at the hole through its fix-up, like for an unmapped address.
            var buffer = new byte[2 * Page];
            Assert.Equal(Page, mm1.CopyFromUser(buffer, s1 + 3 * Page));
            Assert.Equal(8 + sigbus0, _system.Kernel.Statistics.BusErrors);
            Assert.Equal(segv0, _system.Kernel.Statistics.SegmentationFaults);
            // Growing the file again makes the pages mappable again (zero-filled).
            file.Truncate(8 * Page);
            Assert.Equal(0, mm1.Read<long>(s1 + 6 * Page));
            Check(mm1, mm2);
        }
        AssertAllReleased();
    }

    [Fact]
    public void AccessPastTheEndOfALongerMappingIsABusErrorNotASegfault()
    {
        using (FileMapping file = NewFile("short.bin", 1, 7, out _))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, 4 * Page, MemoryProtection.Read, MapFlags.Private, file, 0);
            mm.Read<byte>(a + Page - 1);
            var e = Assert.Throws<BusErrorException>(() => mm.Read<byte>(a + Page));
            Assert.IsNotAssignableFrom<SegmentationFaultException>(e);
            Assert.Contains("BUS_ADRERR", e.Message);
            Assert.Throws<SegmentationFaultException>(() => mm.Read<byte>(a + 4 * Page + 5 * Page));
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void FirstReadOfAnUncachedFileIsAMajorFaultAndACachedOneMinor()
    {
        long maj0 = _system.Kernel.Statistics.MajorFaults;
        using (FileMapping file = NewFile("major.bin", 6, 8, out byte[] data))
        using (AddressSpace mm1 = _system.CreateAddressSpace())
        using (AddressSpace mm2 = _system.CreateAddressSpace())
        {
            ulong a1 = mm1.Mmap(0, 6 * Page, MemoryProtection.Read, MapFlags.Shared, file, 0);
            for (int i = 0; i < 6; i++) Assert.Equal(data[i * Page], mm1.Read<byte>(a1 + (ulong)i * Page));
            Assert.Equal(6, mm1.Statistics.MajorFaults);
            Assert.Equal(6, Cache.Statistics.MajorFaults);
            Assert.Equal(maj0 + 6, _system.Kernel.Statistics.MajorFaults);
            Assert.Equal("6", mm1.Stat().Split(' ')[11]);

            ulong a2 = mm2.Mmap(0, 6 * Page, MemoryProtection.Read, MapFlags.Private, file, 0);
            long min0 = mm2.Statistics.MinorFaults;
            for (int i = 0; i < 6; i++) Assert.Equal(data[i * Page], mm2.Read<byte>(a2 + (ulong)i * Page));
            Assert.Equal(0, mm2.Statistics.MajorFaults);
            Assert.Equal(min0 + 6, mm2.Statistics.MinorFaults);
            Assert.Equal(6, Cache.Statistics.MajorFaults);
            Assert.Equal(12, Cache.Statistics.MappedPages);
            Check(mm1, mm2);
        }
        AssertAllReleased();
    }

    [Fact]
    public void SharedWritableMappingNeedsAFileOpenedForWriting()
    {
        using (FileMapping file = NewFile("ro.bin", 2, 9, out byte[] data, FileAccess.Read))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            Assert.Throws<UnauthorizedAccessException>(() => mm.Mmap(0, 2 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0));
            ulong shared = mm.Mmap(0, 2 * Page, MemoryProtection.Read, MapFlags.Shared, file, 0);
            Assert.Throws<UnauthorizedAccessException>(() => mm.Mprotect(shared, 2 * Page, MemoryProtection.ReadWrite));
            Assert.Throws<SegmentationFaultException>(() => mm.Write<byte>(shared, 1));
            ulong priv = mm.Mmap(0, 2 * Page, MemoryProtection.ReadWrite, MapFlags.Private, file, 0);
            mm.Write<byte>(priv, 1);
            Assert.Equal(data[0], mm.Read<byte>(shared));
            Assert.Throws<ArgumentException>(() => mm.Mmap(0, Page, MemoryProtection.Read, MapFlags.Shared, file, 100));
            Assert.Throws<ArgumentException>(() => mm.Mmap(0, Page, MemoryProtection.Read, MapFlags.Shared | MapFlags.Anonymous, file, 0));
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void MapsAndSmapsShowTheFileAreas()
    {
        using (FileMapping file = NewFile("maps.bin", 4, 10, out _))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, 3 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, Page);
            mm.Write<byte>(a, 1);
            mm.Read<byte>(a + Page);
            string id = file.Inode.ToString(CultureInfo.InvariantCulture);
            string expected = $"{a:x8}-{a + 3 * Page:x8} rw-s 00001000 {file.Device} {id}{new string(' ', 20 - id.Length)}{file.Path}\n";
            Assert.Contains(expected, mm.Maps());
            if (OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64)
            {
                // The file system's own numbers (fstat): the same file opened again has them, another file not.
                Assert.NotEqual("00:00", file.Device);
                using FileMapping again = _system.PageCache.Open(file.Path, FileMode.Open, FileAccess.Read);
                using FileMapping other = NewFile("maps-other.bin", 1, 11, out _);
                Assert.Equal((file.Device, file.Inode), (again.Device, again.Inode));
                Assert.NotEqual(file.Inode, other.Inode);
            }
            string smaps = mm.Smaps();
            int at = smaps.IndexOf(expected, StringComparison.Ordinal);
            Assert.True(at >= 0, smaps);
            string[] lines = smaps[(at + expected.Length)..].Split('\n');
            Assert.Equal("Size:                 12 kB", lines[0]);
            Assert.Equal("Rss:                   8 kB", lines[1]);
            Assert.Equal("Shared_Clean:          0 kB", lines[2]);
            Assert.Equal("Shared_Dirty:          0 kB", lines[3]);
            Assert.Equal("Private_Clean:         4 kB", lines[4]);
            Assert.Equal("Private_Dirty:         4 kB", lines[5]);
            Assert.Equal("Anonymous:             0 kB", lines[6]);
            Assert.Contains("RssFile:         8 kB", mm.Status());
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void IMmapFollowsSplitsMergesForkMremapAndUnmap()
    {
        using (FileMapping file = NewFile("immap.bin", 8, 11, out byte[] data))
        {
            using (AddressSpace mm = _system.CreateAddressSpace())
            {
                ulong a = mm.Mmap(0, 8 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
                Assert.Equal(1, file.MapperCount);
                mm.Mprotect(a + 2 * Page, 2 * Page, MemoryProtection.Read);
                Assert.Equal(3, file.MapperCount);
                mm.Mprotect(a + 2 * Page, 2 * Page, MemoryProtection.ReadWrite);
                Assert.Equal(1, file.MapperCount); // merged again: page offsets are contiguous
                mm.Memset(a, 9, 8 * Page);
                using (AddressSpace child = mm.Fork("child"))
                {
                    Assert.Equal(2, file.MapperCount);
                    // The child faults the same cache pages in.
                    Assert.Equal(9, child.Read<byte>(a + 5 * Page));
                    Assert.True(child.FollowPage(a + 5 * Page) == mm.FollowPage(a + 5 * Page));
                    child.Write<byte>(a + 5 * Page, 10);
                    Assert.Equal(10, mm.Read<byte>(a + 5 * Page));
                    Check(mm, child);
                }
                Assert.Equal(1, file.MapperCount);
                mm.Munmap(a + 3 * Page, Page);
                Assert.Equal(2, file.MapperCount);
                // Moving keeps the pages and the file offset.
                ulong moved = mm.Mremap(a + 4 * Page, 4 * Page, 4 * Page, MremapFlags.MayMove | MremapFlags.Fixed, 0x7000_0000_0000);
                Assert.Equal(2, file.MapperCount);
                Assert.Equal(10, mm.Read<byte>(moved + Page));
                Assert.Contains($"{moved:x8}-{moved + 4 * Page:x8} rw-s 00004000", mm.Maps());
                Assert.Equal(9, mm.Read<byte>(moved + 3 * Page));
                Check(mm);
                mm.Munmap(a, 3 * Page);
                Assert.Equal(1, file.MapperCount);
                mm.Munmap(moved, 4 * Page);
                Assert.Equal(0, file.MapperCount);
                Check(mm);
            }
            file.Fsync();
            Array.Fill(data, (byte)9);
            data[5 * Page] = 10;
            Assert.Equal(data, File.ReadAllBytes(file.Path));
        }
        AssertAllReleased();
    }

    [Fact]
    public void WritersThroughAMappingAreThrottledAtTheDirtyLimit()
    {
        using var system = new MemorySystem(new MemorySystemOptions
        {
            Physical = new PhysicalMemoryOptions { Size = 16L << 20 },
            PageCache = new PageCacheOptions { DirtyBackgroundRatio = 1, DirtyRatio = 1 },
        });
        const int Pages = 512;
        string path = Path.Combine(_dir, "throttle.bin");
        File.WriteAllBytes(path, new byte[Pages * Page]);
        using (FileMapping file = system.PageCache.Open(path))
        using (AddressSpace mm = system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, Pages * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            for (int p = 0; p < Pages; p++) mm.Write<int>(a + (ulong)(p * Page), p + 1);
            // 1% of about 4,000 dirtyable pages: the faulting writer wrote back its own pages long before 512.
            Assert.True(system.PageCache.Statistics.WritersThrottled > 0);
            Assert.True(system.PageCache.Statistics.DirtyPages < Pages / 4, $"{system.PageCache.Statistics.DirtyPages} dirty pages");
            file.Fsync();
            byte[] disk = File.ReadAllBytes(path);
            for (int p = 0; p < Pages; p++) Assert.Equal(p + 1, BitConverter.ToInt32(disk, p * Page));
            system.PageCache.CheckConsistency();
            mm.CheckConsistency();
        }
    }

    [Fact]
    public void ClosingAMappedFileThrowsUntilItIsUnmapped()
    {
        FileMapping file = NewFile("close.bin", 1, 12, out _);
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            mm.Mmap(0, Page, MemoryProtection.Read, MapFlags.Shared, file, 0);
            Assert.Throws<InvalidOperationException>(file.Dispose);
            Check(mm);
        }
        file.Dispose();
        AssertAllReleased();
    }

    [Fact]
    public void ForkCopiesPrivateFilePagesOnWriteOnEitherSide()
    {
        using (FileMapping file = NewFile("forkp.bin", 2, 13, out byte[] data))
        using (AddressSpace parent = _system.CreateAddressSpace())
        {
            ulong a = parent.Mmap(0, 2 * Page, MemoryProtection.ReadWrite, MapFlags.Private, file, 0);
            parent.Read<byte>(a);
            parent.Write<long>(a + Page, 1);
            using (AddressSpace child = parent.Fork("child"))
            {
                Assert.Equal(1, child.Statistics.RssFile);
                Assert.Equal(1, child.Statistics.RssAnon);
                Assert.Equal(2, Cache.Statistics.MappedPages);
                child.Write<long>(a, 2);
                Assert.Equal(BitConverter.ToInt64(data, 0), parent.Read<long>(a));
                child.Write<long>(a + Page, 3);
                Assert.Equal(1, parent.Read<long>(a + Page));
                Assert.Equal(0, child.Statistics.RssFile);
                Check(parent, child);
            }
            Assert.Equal(BitConverter.ToInt64(data, 0), parent.Read<long>(a));
            file.Fsync();
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Check(parent);
        }
        AssertAllReleased();
    }

    [Fact]
    public void PopulateReadsTheFileUpToItsEnd()
    {
        using (FileMapping file = NewFile("populate.bin", 3, 14, out byte[] data))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, 6 * Page, MemoryProtection.Read, MapFlags.Shared | MapFlags.Populate, file, 0);
            Assert.Equal(3, mm.Statistics.RssFile);
            Assert.Equal(3, mm.Statistics.MajorFaults);
            Assert.Equal(data, ReadUser(mm, a, 3 * Page));
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void MsyncRejectsBadFlagsAndReportsHoles()
    {
        using (FileMapping file = NewFile("msync.bin", 4, 15, out byte[] data))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, 4 * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            Assert.Throws<ArgumentException>(() => mm.Msync(a, Page, MsyncFlags.Sync | MsyncFlags.Async));
            Assert.Throws<ArgumentException>(() => mm.Msync(a + 1, Page, MsyncFlags.Sync));
            mm.Write<int>(a + 3 * Page, 77);
            mm.Munmap(a + Page, Page);
            // The hole is reported, the mapped parts are still written.
            Assert.Throws<InvalidOperationException>(() => mm.Msync(a, 4 * Page, MsyncFlags.Sync));
            BitConverter.GetBytes(77).CopyTo(data, 3 * Page);
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void ThreadsWritingThroughMappingsAndWriteWhileFsyncRuns()
    {
        const int Threads = 4;
        const int Pages = 16;
        const int Rounds = 200;
        using (FileMapping file = NewFile("race.bin", Pages, 16, out byte[] data))
        using (AddressSpace mm1 = _system.CreateAddressSpace())
        using (AddressSpace mm2 = _system.CreateAddressSpace())
        {
            ulong a1 = mm1.Mmap(0, Pages * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            ulong a2 = mm2.Mmap(0, Pages * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            ulong p2 = mm2.Mmap(0, Pages * Page, MemoryProtection.Read, MapFlags.Private, file, 0);
            int writersLeft = Threads;
            // Every thread owns 8-byte slots t, t + Threads, ... of every page, and writes them round after round
            // through mm1, mm2 or Write(), reading back through a mapping of the other kind each time.
            RunThreads(Threads + 1, t =>
            {
                if (t == Threads)
                {
                    // Writeback (page_mkclean) and reclaim of clean unmapped pages run throughout.
                    while (Volatile.Read(ref writersLeft) > 0)
                    {
                        file.Fsync();
                        mm2.Msync(a2, Pages * Page, MsyncFlags.Sync);
                        Cache.DropCaches();
                    }
                    return;
                }
                for (int r = 0; r < Rounds; r++)
                {
                    for (int p = 0; p < Pages; p++)
                    {
                        long value = ((long)t << 48) | ((long)r << 16) | (uint)p;
                        int offset = p * Page + (t + Threads * (r % 8)) * 8;
                        switch ((r + p + t) % 3)
                        {
                            case 0: mm1.Write<long>(a1 + (ulong)offset, value); break;
                            case 1: mm2.Write<long>(a2 + (ulong)offset, value); break;
                            default: file.Write(offset, BitConverter.GetBytes(value)); break;
                        }
                        Assert.Equal(value, mm2.Read<long>(a2 + (ulong)offset));
                        Assert.Equal(value, mm1.Read<long>(a1 + (ulong)offset));
                        Assert.Equal(value, mm2.Read<long>(p2 + (ulong)offset));
                    }
                }
                Interlocked.Decrement(ref writersLeft);
            });
            // Once writeback has run, every page must have been write-protected again: a last round of writes
            // through the mappings alone must dirty the pages anew, or msync would leave it out of the file.
            RunThreads(Threads, t =>
            {
                for (int r = Rounds; r < Rounds + 8; r++)
                {
                    for (int p = 0; p < Pages; p++)
                    {
                        long value = ((long)t << 48) | ((long)r << 16) | (uint)p;
                        ulong offset = (ulong)(p * Page + (t + Threads * (r % 8)) * 8);
                        if ((r + p + t) % 2 == 0) mm1.Write<long>(a1 + offset, value);
                        else mm2.Write<long>(a2 + offset, value);
                    }
                }
            });
            // fsync, not msync: it has only PG_dirty to go by, so it fails if a write through a mapping went unseen.
            file.Fsync();
            for (int t = 0; t < Threads; t++)
            {
                for (int s = 0; s < 8; s++)
                {
                    int lastRound = Rounds + s;
                    for (int p = 0; p < Pages; p++)
                    {
                        long value = ((long)t << 48) | ((long)lastRound << 16) | (uint)p;
                        BitConverter.GetBytes(value).CopyTo(data, p * Page + (t + Threads * (lastRound % 8)) * 8);
                    }
                }
            }
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Assert.Equal(0, Cache.Statistics.DirtyPages);
            Check(mm1, mm2);
        }
        AssertAllReleased();
    }

    [Fact]
    public void FaultsRacingTruncationMapNothingPastTheEnd()
    {
        const int Pages = 16;
        using (FileMapping file = NewFile("truncrace.bin", Pages, 18, out _))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong shared = mm.Mmap(0, Pages * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            ulong priv = mm.Mmap(0, Pages * Page, MemoryProtection.ReadWrite, MapFlags.Private, file, 0);
            int running = 3;
            int stop = 0;
            RunThreads(4, t =>
            {
                if (t == 3)
                {
                    for (int i = 0; i < 400; i++) file.Truncate((i % 2 == 0 ? 4 : Pages) * (long)Page);
                    Volatile.Write(ref stop, 1);
                    while (Volatile.Read(ref running) > 0) Thread.Yield();
                    file.Truncate(4 * Page);
                    return;
                }
                // At least one round even when the truncating thread is done before this one starts (a loaded
                // machine), so pages 0..3 are always faulted in.
                for (int round = 0; round == 0 || Volatile.Read(ref stop) == 0; round++)
                {
                    for (int p = 0; p < Pages; p++)
                    {
                        ulong off = (ulong)(p * Page + t * 8);
                        try
                        {
                            if (t == 2) mm.Write<long>(priv + off, round);
                            else if ((round + p) % 2 == 0) mm.Write<long>(shared + off, round);
                            else mm.Read<long>(shared + off);
                        }
                        catch (BusErrorException)
                        {
                            Assert.True(p >= 4, $"bus error at page {p}, inside the file");
                        }
                    }
                }
                Interlocked.Decrement(ref running);
            });
            for (int p = 4; p < Pages; p++)
            {
                Assert.True(mm.FollowPage(shared + (ulong)(p * Page)) == null, $"shared page {p} still mapped");
                Assert.True(mm.FollowPage(priv + (ulong)(p * Page)) == null, $"private page {p} still mapped");
                Assert.Throws<BusErrorException>(() => mm.Read<long>(shared + (ulong)(p * Page)));
            }
            Assert.Equal(4, file.CachedPages);
            Check(mm);
        }
        AssertAllReleased();
    }

    [Fact]
    public void ConcurrentFaultsOnTheSamePagesMapEachPageOnce()
    {
        const int Pages = 64;
        using (FileMapping file = NewFile("faults.bin", Pages, 17, out byte[] data))
        using (AddressSpace mm = _system.CreateAddressSpace())
        {
            ulong a = mm.Mmap(0, Pages * Page, MemoryProtection.ReadWrite, MapFlags.Shared, file, 0);
            RunThreads(4, t =>
            {
                for (int p = 0; p < Pages; p++)
                {
                    int page = t % 2 == 0 ? p : Pages - 1 - p;
                    Assert.Equal(data[page * Page + 8 + t], mm.Read<byte>(a + (ulong)(page * Page + 8 + t)));
                    mm.Write<byte>(a + (ulong)(page * Page + t), (byte)t);
                }
            });
            Assert.Equal(Pages, mm.Statistics.RssFile);
            Assert.Equal(Pages, Cache.Statistics.MappedPages);
            Assert.Equal(Pages, Cache.Statistics.DirtyPages);
            for (int p = 0; p < Pages; p++)
            {
                Assert.Equal(1, mm.FollowPage(a + (ulong)(p * Page))->MapCount);
                for (int t = 0; t < 4; t++) data[p * Page + t] = (byte)t;
            }
            file.Fsync();
            Assert.Equal(data, File.ReadAllBytes(file.Path));
            Check(mm);
        }
        AssertAllReleased();
    }
}
