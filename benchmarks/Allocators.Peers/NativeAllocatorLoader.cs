using System.Runtime.InteropServices;

using Allocators.Native;

namespace Allocators.Peers;

/// <summary>Loads a <see cref="NativeAllocatorSpec"/> with the dynamic loader and never throws: failures become an absent library with a reason.</summary>
internal static unsafe class NativeAllocatorLoader
{
    /// <summary>The tunable that gives dlopen room for libraries built with static TLS (such as jemalloc).</summary>
    public const string StaticTlsTunable = "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384";

    public static NativeAllocatorLibrary Load(NativeAllocatorSpec spec, nint glibcMalloc)
    {
        try
        {
            return LoadCore(spec, glibcMalloc);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return new NativeAllocatorLibrary(spec.Name, $"absent: loading {spec.Name} failed: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private static NativeAllocatorLibrary LoadCore(NativeAllocatorSpec spec, nint glibcMalloc)
    {
        if (!Libc.IsLinux)
        {
            return new NativeAllocatorLibrary(spec.Name, "absent: native allocators are only loaded on Linux");
        }

        foreach (string candidate in spec.Candidates)
        {
            if (!NativeLibrary.TryLoad(candidate, out nint handle))
            {
                continue;
            }

            if (!TryResolve(handle, spec, out NativeAllocatorExports exports, out nint malloc))
            {
                return new NativeAllocatorLibrary(spec.Name, $"absent: {candidate} loaded but does not export {Describe(spec.SymbolSets)}");
            }

            if (glibcMalloc != 0 && malloc == glibcMalloc)
            {
                return new NativeAllocatorLibrary(spec.Name, $"absent: {candidate} resolved malloc to glibc's own");
            }

            string path = PathOf(malloc) ?? candidate;
            return new NativeAllocatorLibrary(spec.Name, $"loaded {candidate}", path, exports);
        }

        return new NativeAllocatorLibrary(spec.Name, "absent: " + Diagnose(spec));
    }

    private static bool TryResolve(nint handle, NativeAllocatorSpec spec, out NativeAllocatorExports exports, out nint malloc)
    {
        foreach (string[] set in spec.SymbolSets)
        {
            var addresses = new nint[set.Length];
            bool complete = true;
            for (int i = 0; i < set.Length && complete; i++)
            {
                complete = NativeLibrary.TryGetExport(handle, set[i], out addresses[i]);
            }

            if (complete)
            {
                exports = new NativeAllocatorExports(addresses[0], addresses[1], addresses[2], addresses[3], addresses[4]);
                malloc = addresses[0];
                return true;
            }
        }

        exports = default;
        malloc = 0;
        return false;
    }

    /// <summary>Loads the candidates again through the throwing API to recover the loader's error text, and turns it into advice.</summary>
    private static string Diagnose(NativeAllocatorSpec spec)
    {
        string? otherError = null;
        foreach (string candidate in spec.Candidates)
        {
            string error = LoaderError(candidate);
            if (error.Contains("static TLS", StringComparison.OrdinalIgnoreCase))
            {
                string current = Environment.GetEnvironmentVariable("GLIBC_TUNABLES") is { Length: > 0 } value
                    ? $"GLIBC_TUNABLES is '{value}'"
                    : "GLIBC_TUNABLES is not set";
                return $"needs {StaticTlsTunable} in the environment before the process starts ({current}); {candidate}: {error}";
            }

            bool notFound = error.Contains("No such file", StringComparison.Ordinal)
                || error.Contains("cannot open shared object", StringComparison.Ordinal);
            if (!notFound)
            {
                otherError ??= $"{candidate} failed to load: {error}";
            }
        }

        return otherError ?? $"{spec.Candidates[0]} not found (apt-get install -y {spec.Package})";
    }

    private static string LoaderError(string candidate)
    {
        try
        {
            nint handle = NativeLibrary.Load(candidate);
            NativeLibrary.Free(handle);
            return "loaded on retry but not on first attempt";
        }
        catch (DllNotFoundException ex)
        {
            string[] lines = ex.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            return lines.Length == 0 ? ex.Message : lines[^1];
        }
        catch (BadImageFormatException ex)
        {
            return ex.Message;
        }
    }

    private static string? PathOf(nint symbol)
    {
        Dl.DlInfo info;
        if (Dl.Dladdr((void*)symbol, &info) == 0 || info.FileName == null)
        {
            return null;
        }

        return Marshal.PtrToStringUTF8((nint)info.FileName);
    }

    private static string Describe(string[][] sets) =>
        string.Join(" or ", sets.Select(set => string.Join("/", set)));
}
