using System.Runtime.InteropServices;
using Allocators.Swap;

namespace Allocators.Tests.Swap;

/// <summary>Page I/O on a real swap file: pwrite/pread per slot, preadv readahead, fail_make_request.</summary>
public sealed unsafe class SwapIoTests : SwapTestBase
{
    [Fact]
    public void PagesWrittenToSlotsReadBackAndSitAtSlotTimesPageSize()
    {
        SwapDevice device = Swapon("swap", 64);
        byte* page = (byte*)NativeMemory.AlignedAlloc(PageSize, PageSize);
        byte* back = (byte*)NativeMemory.AlignedAlloc(PageSize, PageSize);
        try
        {
            var random = new Random(42);
            var written = new Dictionary<SwapEntry, byte[]>();
            for (int i = 0; i < 40; i++)
            {
                SwapEntry e = device.GetSwapPage();
                byte[] data = new byte[PageSize];
                random.NextBytes(data);
                data.CopyTo(new Span<byte>(page, PageSize));
                device.WritePage(e, page);
                written[e] = data;
            }
            foreach ((SwapEntry e, byte[] data) in written)
            {
                device.ReadPage(e, back);
                Assert.True(new ReadOnlySpan<byte>(back, PageSize).SequenceEqual(data));
            }

            // The file itself: slot n is page n.
            SwapEntry any = written.Keys.First();
            byte[] file = File.ReadAllBytes(device.Path);
            Assert.True(file.AsSpan((int)any.Offset * PageSize, PageSize).SequenceEqual(written[any]));
            Assert.Equal("SWAPSPACE2"u8.ToArray(), file.AsSpan(PageSize - 10, 10).ToArray()); // the header is never written over
        }
        finally
        {
            NativeMemory.AlignedFree(page);
            NativeMemory.AlignedFree(back);
        }
    }

    [Fact]
    public void ReadaheadReadsNeighbouringSlotsInOneCall()
    {
        SwapDevice device = Swapon("swap", 64);
        const int count = 8;
        byte* pages = (byte*)NativeMemory.AlignedAlloc(count * PageSize, PageSize);
        byte** dsts = stackalloc byte*[count];
        try
        {
            var entries = new SwapEntry[count];
            for (int i = 0; i < count; i++)
            {
                entries[i] = device.GetSwapPage();
                new Span<byte>(pages, PageSize).Fill((byte)(i + 1));
                device.WritePage(entries[i], pages);
            }
            Assert.All(entries, (e, i) => Assert.Equal(entries[0].Offset + (ulong)i, e.Offset)); // one cluster, in order
            new Span<byte>(pages, count * PageSize).Clear();
            for (int i = 0; i < count; i++) dsts[i] = pages + i * PageSize;

            Assert.Equal(count, device.ReadPages((uint)entries[0].Offset, count, dsts));
            for (int i = 0; i < count; i++)
                Assert.True(new ReadOnlySpan<byte>(dsts[i], PageSize).IndexOfAnyExcept((byte)(i + 1)) < 0, $"page {i}");
            Assert.Throws<ArgumentOutOfRangeException>(() => device.ReadPages(60, 8, dsts));   // runs past last_page 63
            Assert.Throws<ArgumentOutOfRangeException>(() => device.ReadPages(0, 1, dsts));    // the header is no slot
        }
        finally
        {
            NativeMemory.AlignedFree(pages);
        }
    }

    [Fact]
    public void InjectedWriteFailureThrowsAndLeavesTheSlotAllocatedAndCached()
    {
        SwapDevice device = Swapon("swap", 64);
        SwapEntry e = device.GetSwapPage();
        byte* page = stackalloc byte[PageSize];
        device.FailMakeRequest.Probability = 100;
        device.FailMakeRequest.Times = 1;

        var ex = Assert.Throws<IOException>(() => device.WritePage(e, page));
        Assert.Contains(device.Path, ex.Message);
        Assert.Contains($"slot {e.Offset}", ex.Message);
        Assert.Contains("EIO", ex.Message);
        Assert.True(device.HasCache(e));
        Assert.Equal(1, device.UsedPages);
        Assert.Equal(1, device.FailMakeRequest.Injected);

        device.WritePage(e, page);   // Times = 1: the next write goes through
        device.ReadPage(e, page);    // reads are not failed unless asked
        device.FailMakeRequestReads = true;
        device.FailMakeRequest.FailNth = 1;
        Assert.Throws<IOException>(() => device.ReadPage(e, page));
        device.CheckConsistency();
    }
}
