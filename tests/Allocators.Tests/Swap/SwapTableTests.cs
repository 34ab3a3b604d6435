using Allocators.Common;
using Allocators.Swap;

namespace Allocators.Tests.Swap;

/// <summary>swapon/swapoff, priorities, allocation order across devices and /proc/swaps.</summary>
public sealed class SwapTableTests : SwapTestBase
{
    [Fact]
    public void DefaultPrioritiesCountDownFromMinusTwoAndMoveUpOnSwapoff()
    {
        SwapDevice a = Swapon("a", 20), b = Swapon("b", 20), c = Swapon("c", 20);
        Assert.Equal([-2, -3, -4], new[] { a.Priority, b.Priority, c.Priority });
        Assert.Equal([0, 1, 2], new[] { a.Type, b.Type, c.Type });
        _table.Swapoff(a.Path, _ => true);
        Assert.Equal([-2, -3], new[] { b.Priority, c.Priority });
        SwapDevice d = Swapon("d", 20);
        Assert.Equal(-4, d.Priority);
        Assert.Equal(0, d.Type);   // the lowest free type is reused
    }

    [Fact]
    public void HigherPriorityFirstAndEqualPrioritiesTakeTurns()
    {
        SwapDevice low = Swapon("low", 20, priority: 1);
        SwapDevice high = Swapon("high", 20, priority: 10);
        for (int i = 0; i < 19; i++) Assert.Equal(high.Type, _table.GetSwapPage().Type);
        Assert.Equal(low.Type, _table.GetSwapPage().Type);      // high is full

        SwapDevice x = Swapon("x", 100, priority: 20), y = Swapon("y", 100, priority: 20);
        var types = Enumerable.Range(0, 10).Select(_ => _table.GetSwapPage().Type).ToArray();
        Assert.Equal(5, types.Count(t => t == x.Type));
        Assert.Equal(5, types.Count(t => t == y.Type));
        for (int i = 1; i < types.Length; i++) Assert.NotEqual(types[i - 1], types[i]);
    }

    [Fact]
    public void DeviceOfFindsTheDeviceByType()
    {
        SwapDevice a = Swapon("a", 20), b = Swapon("b", 20);
        SwapEntry e = b.GetSwapPage();
        Assert.Same(b, _table.DeviceOf(e));
        Assert.Same(a, _table.DeviceOf(new SwapEntry(a.Type, 3)));
        Assert.Contains("Bad swap file entry", Assert.Throws<MemoryCorruptionException>(() => _table.DeviceOf(new SwapEntry(7, 1))).Message);
    }

    [Fact]
    public void TotalsAndProcSwapsMatchTheKernelsFormat()
    {
        SwapDevice a = Swapon("a", 257);
        SwapDevice b = Swapon("b", 20, priority: 5);
        for (int i = 0; i < 3; i++) a.GetSwapPage();
        Assert.Equal(256 + 19, _table.TotalPages);
        Assert.Equal(256 + 19 - 3, _table.FreePages);

        string expected = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
            + a.Path + new string(' ', Math.Max(1, 40 - a.Path.Length)) + "file\t\t1024\t\t12\t\t-2\n"
            + b.Path + new string(' ', Math.Max(1, 40 - b.Path.Length)) + "file\t\t76\t\t0\t\t5\n";
        Assert.Equal(expected, _table.ProcSwaps());
    }

    [Fact]
    public void ProcSwapsEscapesSpacesAndPadsShortNames()
    {
        string path = Mkswap("my swap", 20);
        _table.Swapon(path);
        string line = _table.ProcSwaps().Split('\n')[1];
        string name = path.Replace(" ", "\\040");
        Assert.StartsWith(name + new string(' ', Math.Max(1, 40 - name.Length)) + "file\t\t76\t\t0\t\t-2", line);
    }

    [Fact]
    public void SwapoffWithUnuseThatEmptiesTheDeviceRemovesIt()
    {
        SwapDevice device = Swapon("swap", 40);
        var held = Enumerable.Range(0, 10).Select(_ => _table.GetSwapPage()).ToList();
        foreach (SwapEntry e in held) device.Duplicate(e);
        bool sawWriteOkCleared = false;
        _table.Swapoff(device.Path, d =>
        {
            sawWriteOkCleared = !d.WriteOk && _table.GetSwapPage().IsNone;
            foreach (SwapEntry e in held) { d.SwapFree(e); d.PutSwapCache(e); }   // every page read back, every PTE made present
            return true;
        });
        Assert.True(sawWriteOkCleared);
        Assert.Empty(_table.Devices);
        Assert.Equal(0, _table.TotalPages);
        Assert.Equal("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n", _table.ProcSwaps());
        Assert.Throws<ArgumentException>(() => _table.Swapoff(device.Path, _ => true));
    }

    [Fact]
    public void SwapoffThatCannotBringPagesBackLeavesTheDeviceOn()
    {
        SwapDevice device = Swapon("swap", 40);
        SwapEntry e = _table.GetSwapPage();
        var ex = Assert.Throws<OutOfMemoryException>(() => _table.Swapoff(device.Path, _ => false));
        Assert.Contains("ENOMEM", ex.Message);
        Assert.True(device.WriteOk);
        Assert.Same(device, _table.DeviceOf(e));
        Assert.False(_table.GetSwapPage().IsNone);

        // unuse claiming success while slots are still used is refused too.
        Assert.Throws<InvalidOperationException>(() => _table.Swapoff(device.Path, _ => true));
        Assert.True(device.WriteOk);
        device.CheckConsistency();
    }

    [Fact]
    public void AtMost32Devices()
    {
        for (int i = 0; i < SwapEntry.MaxSwapFiles; i++) Swapon($"s{i}", 10);
        Assert.Contains("MAX_SWAPFILES", Assert.Throws<InvalidOperationException>(() => Swapon("one-more", 10)).Message);
        Assert.Equal(32, _table.Devices.Count);
        Assert.Equal(-33, _table.Devices[^1].Priority);
    }
}
