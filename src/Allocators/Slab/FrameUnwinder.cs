using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Allocators.Native;

namespace Allocators.Slab;

/// <summary>
/// Reads the return addresses of the innermost frames by following the frame-pointer chain, as the kernel's
/// frame-pointer unwinder does on x86-64: each frame keeps the caller's RBP at [rbp] and the return address at
/// [rbp + 8]. Linux x86-64 under the JIT only; elsewhere <see cref="Available"/> is false.
/// </summary>
/// <remarks>
/// <para>The JIT targets Unix x64 with <c>ETW_EBP_FRAMED</c> (src/coreclr/jit/targetamd64.h): RBP is never a scratch
/// register, and <c>rpMustCreateEBPFrame</c> gives an RBP frame to every method that is not optimized or has more than
/// 100 bytes of IL, more than three basic blocks, a loop, two calls that are not tail calls, an indirect call, a
/// P/Invoke, a stackalloc or exception handling. An optimized method too small for all of these may run without one:
/// it leaves RBP alone, so the chain stays intact but skips its caller's return address.</para>
/// <para>The walk trusts a frame pointer only if it is 8-aligned, above the previous one and inside the thread's stack
/// (read once per thread); it stops at a zero frame pointer or return address (the outermost frame), at the limit, or
/// at the first pointer that fails, reading nothing through it. Every frame between an allocation and its managed
/// caller is a managed frame, so a pointer fails only beyond them: in the native frames that start the thread (on the
/// main thread glibc's <c>__libc_start_call_main</c> leaves <c>argc</c> in RBP, so every walk there ends this way).</para>
/// </remarks>
internal static unsafe class FrameUnwinder
{
    /// <summary>
    /// How many return addresses a walk reads. The capture names the first frame outside the library, which the
    /// library's deepest paths in the test suite reach at trace frame 12 (unoptimised code, nothing inlined); 16 leaves a
    /// margin, and each frame read costs about 2.5 ns. A stack whose caller lies deeper is never stored and keeps
    /// taking the managed trace, so a low limit costs time, never a wrong name.
    /// </summary>
    public const int MaxFrames = 16;

    // mov rax, rbp; ret: the caller's frame pointer, since the stub builds no frame of its own.
    private static ReadOnlySpan<byte> ReadFramePointerCode => [0x48, 0x89, 0xe8, 0xc3];

    private static readonly delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint> s_readFramePointer = MapStub();

    [ThreadStatic] private static nuint t_stackLow;
    [ThreadStatic] private static nuint t_stackHigh;
    [ThreadStatic] private static bool t_stackKnown;

    /// <summary>True where walks can run: Linux x86-64, the JIT, and the stub page mapped.</summary>
    public static bool Available => s_readFramePointer != null;

    private static delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint> MapStub()
    {
        // NativeAOT would run the stub the same way, but its frames are untested here; it keeps the managed walk.
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64
            || !RuntimeFeature.IsDynamicCodeSupported) return null;
        return (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint>)HostMemory.MapCode(ReadFramePointerCode);
    }

    /// <summary>
    /// Writes the return addresses of up to <see cref="MaxFrames"/> frames, innermost first (the first is in this
    /// method's caller), into <paramref name="frames"/> and returns how many, or -1 where no walk can run (no stub, or
    /// the thread's stack unknown). <paramref name="outermost"/> is true when the walk reached the thread's first frame
    /// (a zero frame pointer or return address); false when it stopped at the limit or on a frame pointer that fails
    /// the checks, which is where native code that keeps no frame pointer left another value in RBP.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Walk(nuint* frames, out bool outermost)
    {
        outermost = false;
        if (s_readFramePointer == null || !t_stackKnown && !LearnStack()) return -1;
        nuint low = t_stackLow, high = t_stackHigh;
        nuint fp = s_readFramePointer();
        nuint previous = 0;
        int n = 0;
        while (n < MaxFrames)
        {
            if (fp == 0) { outermost = true; break; }
            if ((fp & 7) != 0 || fp <= previous || fp < low || fp > high - 16) break;
            nuint ret = *(nuint*)(fp + 8);
            if (ret == 0) { outermost = true; break; }
            frames[n++] = ret;
            previous = fp;
            fp = *(nuint*)fp;
        }
        return n;
    }

    /// <summary>
    /// True if one of the first <paramref name="count"/> return addresses lies in the runtime's own code
    /// (libcoreclr.so). Between an allocation and its managed caller every frame is managed, so such an address there is
    /// the runtime's return-address hijack (a thread being suspended for a GC returns through a stub in place of its
    /// caller): the real caller is hidden and the walk must not become a key. Reads /proc/self/maps once.
    /// </summary>
    public static bool HidesAFrame(nuint* frames, int count)
    {
        foreach ((nuint start, nuint end) in s_runtimeCode.Value)
            for (int i = 0; i < count; i++)
                if (frames[i] >= start && frames[i] < end) return true;
        return false;
    }

    private static readonly Lazy<(nuint Start, nuint End)[]> s_runtimeCode = new(ReadRuntimeCode);

    private static (nuint Start, nuint End)[] ReadRuntimeCode()
    {
        var ranges = new List<(nuint, nuint)>();
        try
        {
            // 7f12a0000000-7f12a0400000 r-xp 00012000 08:01 1234 /usr/share/dotnet/shared/.../libcoreclr.so
            foreach (string line in File.ReadLines("/proc/self/maps"))
            {
                string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 6 || f[1].Length < 3 || f[1][2] != 'x' || !f[5].EndsWith("/libcoreclr.so", StringComparison.Ordinal)) continue;
                int dash = f[0].IndexOf('-');
                ranges.Add((nuint.Parse(f[0].AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber),
                            nuint.Parse(f[0].AsSpan(dash + 1), System.Globalization.NumberStyles.HexNumber)));
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return [.. ranges];
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool LearnStack()
    {
        if (!HostMemory.TryGetThreadStack(out nuint low, out nuint high) || high - low < 32) return false;
        t_stackLow = low;
        t_stackHigh = high;
        t_stackKnown = true;
        return true;
    }
}
