using System.Runtime.InteropServices;
using Allocators.Native;

namespace Allocators.Tests.Native;

/// <summary>Executable stubs (<see cref="HostMemory.MapCode"/>) and the thread's stack bounds, on Linux x86-64.</summary>
public sealed unsafe class HostMemoryCodeTests
{
    [Fact]
    public void MappedCodeRunsAndItsPageIsNotWritable()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64) return;
        byte* code = HostMemory.MapCode([0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3]); // mov eax, 42; ret
        Assert.True(code != null);
        Assert.Equal(42, ((delegate* unmanaged[Cdecl, SuppressGCTransition]<int>)code)());
        // The kernel merges the page with an adjacent stub page of the same protection: find the mapping holding it.
        Assert.Contains(File.ReadLines("/proc/self/maps"), line =>
        {
            string[] range = line.Split(' ')[0].Split('-');
            ulong start = Convert.ToUInt64(range[0], 16), end = Convert.ToUInt64(range[1], 16);
            return (ulong)code >= start && (ulong)code < end && line.Contains(" r-xp ", StringComparison.Ordinal);
        });
    }

    [Fact]
    public void CodeLargerThanAPageIsRefused()
        => Assert.True(HostMemory.MapCode(new byte[(int)HostMemory.PageSize + 1]) == null);

    [Fact]
    public void TheThreadStackHoldsALocalOnEveryThread()
    {
        if (!OperatingSystem.IsLinux()) return;
        static void Check()
        {
            int local = 0;
            Assert.True(HostMemory.TryGetThreadStack(out nuint low, out nuint high));
            Assert.InRange((nuint)(&local), low, high - 1);
        }
        Check();
        Exception? failure = null;
        var thread = new Thread(() => { try { Check(); } catch (Exception e) { failure = e; } });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
    }
}
