using System.Diagnostics;

namespace Allocators.Slab;

/// <summary>
/// Names the first frame of a stack trace outside this library: <c>Type.Method+0xOFFSET</c>, with the IL offset under
/// the JIT and the machine-code offset under NativeAOT, which keeps no IL offsets. A NativeAOT app published with
/// <c>StackTraceSupport</c> off keeps no method names at all; its sites are <see cref="UnknownUnderAot"/> and the
/// image offsets of the innermost frames, which <c>addr2line -e app.dbg</c> turns into names.
/// </summary>
internal static class CallerName
{
    /// <summary>The start of every site captured in a NativeAOT app published without stack trace data.</summary>
    public const string UnknownUnderAot = "<unknown, AOT>";

    /// <summary>How many frames an unnamed site lists: enough to tell apart the callers of one allocation helper.</summary>
    internal const int UnnamedFrames = 6;

    private static readonly string LibraryName = typeof(CallerName).Assembly.GetName().Name!;

    /// <summary>The name of the first frame of <paramref name="trace"/> outside this library.</summary>
    public static string Of(StackTrace trace) => Of(trace, out _);

    /// <summary>
    /// The name of the first frame of <paramref name="trace"/> outside this library; <paramref name="depth"/> is how many
    /// frames, from the innermost, the name depends on.
    /// </summary>
    public static string Of(StackTrace trace, out int depth)
    {
        for (int i = 0; i < trace.FrameCount; i++)
        {
            if (trace.GetFrame(i) is not { } frame) continue;
            // DiagnosticMethodInfo reads the stack trace metadata NativeAOT keeps; StackFrame.GetMethod needs reflection
            // metadata that trimming removes (IL2026).
            if (DiagnosticMethodInfo.Create(frame) is not { } method)
            {
                depth = Math.Min(trace.FrameCount, i + UnnamedFrames);
                return Unnamed(Offsets(trace, i));
            }
            if (method.Name.Length == 0 || IsThisLibrary(method.DeclaringAssemblyName)) continue;
            int offset = frame.GetILOffset();
            if (offset == StackFrame.OFFSET_UNKNOWN) offset = frame.GetNativeOffset();
            string type = ShortTypeName(method.DeclaringTypeName);
            depth = i + 1;
            return $"{type}{(type.Length > 0 ? "." : "")}{method.Name}+0x{offset:x}";
        }
        depth = trace.FrameCount;
        return "<unknown>";
    }

    /// <summary>
    /// <c>&lt;unknown, AOT&gt; image+0x1f2e0 &lt; image+0x1f4a8 ...</c>: which frames are this library's cannot be told
    /// without names, so the innermost few are listed, innermost first; distinct callers give distinct sites.
    /// </summary>
    internal static string Unnamed(IEnumerable<long> imageOffsets)
    {
        string frames = string.Join(" < ", imageOffsets.Take(UnnamedFrames).Select(o => $"image+0x{o:x}"));
        return frames.Length == 0 ? UnknownUnderAot : $"{UnknownUnderAot} {frames}";
    }

    /// <summary>Each frame's instruction pointer less its image base, from frame <paramref name="first"/> on.</summary>
    private static IEnumerable<long> Offsets(StackTrace trace, int first)
    {
        for (int i = first; i < trace.FrameCount; i++)
        {
            if (trace.GetFrame(i) is not { } frame || !frame.HasNativeImage()) continue;
            yield return (long)(frame.GetNativeIP() - frame.GetNativeImageBase());
        }
    }

    /// <summary>True for a display name such as <c>Allocators, Version=0.1.0.0, ...</c>.</summary>
    private static bool IsThisLibrary(string? assembly)
        => assembly is not null && assembly.StartsWith(LibraryName, StringComparison.Ordinal)
            && (assembly.Length == LibraryName.Length || assembly[LibraryName.Length] == ',');

    /// <summary><c>Handlers+Get</c> for <c>App.Web.Handlers+Get</c>: the name without its namespace.</summary>
    internal static string ShortTypeName(string? fullName)
    {
        if (string.IsNullOrEmpty(fullName)) return "";
        int generic = fullName.IndexOf('[');
        int dot = fullName.LastIndexOf('.', generic < 0 ? fullName.Length - 1 : generic);
        return dot < 0 ? fullName : fullName[(dot + 1)..];
    }
}
