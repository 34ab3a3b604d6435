using System.Runtime.InteropServices;
using Allocators.Filemap;
using Allocators.Physical;

namespace Allocators.Tests.Filemap;

/// <summary>
/// Writeback errors from the operating system, not from a hook: /dev/full (every write fails with ENOSPC) and, where
/// the file system and privileges allow it, a file made immutable under an open descriptor (writes fail with EPERM
/// until the flag is cleared, so the cause can be fixed and a later fsync succeed).
/// </summary>
public sealed class PageCacheWritebackErrorTests() : PageCacheTestBase()
{
    [Fact]
    public void EnospcFromDevFullReachesFsyncAndLeavesThePagesDirty()
    {
        PageCache cache = _system.PageCache;
        using FileMapping file = cache.Open("/dev/full");
        byte[] data = Pattern(3 * 4096, 1);
        file.Write(0, data);
        Assert.Equal(3, cache.Statistics.DirtyPages);

        var error = Assert.Throws<IOException>(file.Fsync);
        Assert.Contains("space", error.ToString(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(3, cache.Statistics.DirtyPages);
        Assert.Equal(0, cache.Statistics.WritebackPages);
        Assert.Equal(1, cache.Statistics.WriteErrors);
        Assert.Equal(0, cache.Statistics.PagedOutKb);
        cache.CheckConsistency();

        // The data is not lost: it still reads back, survives a drop, and the next fsync tries (and fails) again.
        Assert.Equal(0, cache.DropCaches());
        var back = new byte[data.Length];
        Assert.Equal(data.Length, file.Read(0, back));
        Assert.Equal(data, back);
        Assert.Throws<IOException>(file.Fsync);
        Assert.Equal(2, cache.Statistics.WriteErrors);
        Assert.Equal(3, cache.Statistics.DirtyPages);

        // Background writeback (sync(2), the flusher) records the error without throwing it.
        cache.Sync();
        Assert.Equal(3, cache.Statistics.WriteErrors);
        Assert.Equal(3, cache.Statistics.DirtyPages);
    }

    [Fact]
    public void FsyncSucceedsOnceTheCauseIsFixedAndReportsEachErrorOnce()
    {
        PageCache cache = _system.PageCache;
        string path = Path.Combine(_dir, "immutable.bin");
        using FileMapping file = cache.Open(path);
        file.Write(0, Pattern(2 * 4096, 2));
        file.Fsync();

        byte[] data = Pattern(2 * 4096, 3);
        file.Write(0, data);
        if (!Immutable.TrySet(path, true)) return; // no FS_IOC_SETFLAGS here (file system or CAP_LINUX_IMMUTABLE): /dev/full covers the failure
        try
        {
            Assert.Throws<IOException>(file.Fsync);
            Assert.Equal(2, cache.Statistics.DirtyPages);
        }
        finally { Immutable.TrySet(path, false); }
        // Fixed: the dirty pages go out, and the error was already reported, so this fsync succeeds.
        file.Fsync();
        Assert.Equal(0, cache.Statistics.DirtyPages);
        Assert.Equal(data, File.ReadAllBytes(path));

        // An error met by background writeback is reported by the next fsync even though that fsync's own writes
        // succeed (errseq), and only by that one.
        byte[] more = Pattern(4096, 4);
        file.Write(4096, more);
        Assert.True(Immutable.TrySet(path, true));
        try
        {
            cache.Sync();
            Assert.Equal(1, cache.Statistics.DirtyPages);
        }
        finally { Immutable.TrySet(path, false); }
        Assert.Throws<IOException>(file.Fsync);
        Assert.Equal(0, cache.Statistics.DirtyPages);
        file.Fsync();
        Assert.Equal(more, File.ReadAllBytes(path)[4096..]);
        Assert.Equal(2, cache.Statistics.WriteErrors);
    }

    /// <summary>chattr +i / -i through FS_IOC_SETFLAGS (writes to an open descriptor then fail with EPERM).</summary>
    private static class Immutable
    {
        private const uint FsIocGetFlags = 0x80086601;
        private const uint FsIocSetFlags = 0x40086602;
        private const int FsImmutableFl = 0x10;

        [DllImport("libc", SetLastError = true)]
        private static extern int ioctl(int fd, nuint request, ref int flags);

        public static bool TrySet(string path, bool on)
        {
            if (!OperatingSystem.IsLinux()) return false;
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            int fd = (int)handle.DangerousGetHandle();
            int flags = 0;
            if (ioctl(fd, FsIocGetFlags, ref flags) != 0) return false;
            flags = on ? flags | FsImmutableFl : flags & ~FsImmutableFl;
            return ioctl(fd, FsIocSetFlags, ref flags) == 0;
        }
    }
}
