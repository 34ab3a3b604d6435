using System.Runtime.InteropServices;

namespace Allocators.Peers;

/// <summary>The dynamic linker's <c>dladdr(3)</c>, to name the library a loaded symbol came from.</summary>
internal static unsafe partial class Dl
{
    /// <summary><c>dladdr(3)</c>: describes the shared object containing <paramref name="address"/>. Returns non-zero on success.</summary>
    [LibraryImport("libc", EntryPoint = "dladdr")]
    internal static partial int Dladdr(void* address, DlInfo* info);

    /// <summary>Layout of glibc's <c>Dl_info</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct DlInfo
    {
        /// <summary>Path of the shared object (<c>dli_fname</c>).</summary>
        public byte* FileName;

        /// <summary>Load address of the shared object (<c>dli_fbase</c>).</summary>
        public void* FileBase;

        /// <summary>Name of the nearest symbol (<c>dli_sname</c>).</summary>
        public byte* SymbolName;

        /// <summary>Address of the nearest symbol (<c>dli_saddr</c>).</summary>
        public void* SymbolAddress;
    }
}
