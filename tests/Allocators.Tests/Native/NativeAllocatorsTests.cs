using Allocators.Native;
using Allocators.Peers;

namespace Allocators.Tests.Native;

public sealed unsafe class NativeAllocatorsTests
{
    public static TheoryData<string> OptionalAllocators => new() { "mimalloc", "jemalloc", "tcmalloc" };

    [Fact]
    public void GlibcIsAlwaysAvailable()
    {
        NativeAllocatorLibrary glibc = NativeAllocators.Glibc;
        Assert.Equal("glibc", glibc.Name);
        Assert.True(glibc.IsAvailable, glibc.Status);
        Assert.StartsWith("loaded", glibc.Status, StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty(glibc.LibraryPath));
        Exercise(glibc);
    }

    [Theory]
    [MemberData(nameof(OptionalAllocators))]
    public void OptionalAllocatorWorksOrReportsAbsent(string name)
    {
        NativeAllocatorLibrary library = NativeAllocators.All.Single(l => l.Name == name);
        if (library.IsAvailable)
        {
            Assert.StartsWith("loaded", library.Status, StringComparison.Ordinal);
            Assert.NotNull(library.LibraryPath);
            Assert.True((nint)library.Malloc != (nint)NativeAllocators.Glibc.Malloc, "must not resolve to glibc's malloc");
            Exercise(library);
        }
        else
        {
            Assert.StartsWith("absent", library.Status, StringComparison.Ordinal);
            Assert.Null(library.LibraryPath);
            Assert.True(library.Malloc == null);
            Assert.True(library.Free == null);
            Assert.True(library.Calloc == null);
            Assert.True(library.Realloc == null);
            Assert.True(library.AlignedAlloc == null);
        }
    }

    [Fact]
    public void InstalledButUnloadableJemallocNamesTheTunable()
    {
        NativeAllocatorLibrary jemalloc = NativeAllocators.Jemalloc;
        bool installed = File.Exists("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
        if (installed && !jemalloc.IsAvailable)
        {
            Assert.StartsWith("absent: needs GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384", jemalloc.Status, StringComparison.Ordinal);
        }

        string tunables = Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? string.Empty;
        if (installed && tunables.Contains("glibc.rtld.optional_static_tls=16384", StringComparison.Ordinal))
        {
            Assert.True(jemalloc.IsAvailable, jemalloc.Status);
        }
    }

    [Fact]
    public void AllListsTheFourAllocatorsInOrder()
    {
        Assert.Equal(["glibc", "mimalloc", "jemalloc", "tcmalloc"], NativeAllocators.All.Select(l => l.Name));
        Assert.Same(NativeAllocators.Mimalloc, NativeAllocators.All[1]);
    }

    private static void Exercise(NativeAllocatorLibrary library)
    {
        byte* block = (byte*)library.Malloc(256);
        Assert.True(block != null);
        new Span<byte>(block, 256).Fill(0x11);

        block = (byte*)library.Realloc(block, 64 * 1024);
        Assert.True(block != null);
        Assert.Equal(0x11, block[255]);
        library.Free(block);

        byte* zeroed = (byte*)library.Calloc(100, 10);
        Assert.True(zeroed != null);
        Assert.True(new Span<byte>(zeroed, 1000).IndexOfAnyExcept((byte)0) < 0);
        library.Free(zeroed);

        void* aligned = library.AlignedAlloc(4096, 8192);
        Assert.True(aligned != null);
        Assert.Equal(0UL, (ulong)aligned % 4096);
        library.Free(aligned);

        for (int i = 0; i < 10_000; i++)
        {
            void* p = library.Malloc((nuint)(i % 1000 + 1));
            Assert.True(p != null);
            library.Free(p);
        }
    }
}
