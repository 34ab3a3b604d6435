using System.Runtime.CompilerServices;

namespace Allocators.Buffers;

/// <summary>
/// Lets a native buffer be seen as a <c>byte[]</c> by writing an array object header (sync block, method table,
/// length) in the 32 bytes before the data. APIs that insist on arrays (Kestrel's socket transport builds
/// <c>SocketAsyncEventArgs.BufferList</c> from <c>MemoryMarshal.TryGetArray</c>) then work on native memory.
/// The GC ignores references to objects outside its own address ranges, the same way it treats frozen objects,
/// so such an array is never moved, marked or collected; it lives exactly as long as the native buffer.
/// </summary>
internal static unsafe class NativeArrayHeader
{
    /// <summary>Bytes reserved before the data for the fake header.</summary>
    public const int Size = 32;

    private static readonly nint ByteArrayMethodTable = typeof(byte[]).TypeHandle.Value;

    /// <summary>Writes the header before <paramref name="data"/> and returns the array that views it.</summary>
    public static byte[] Create(byte* data, int length)
    {
        ((nint*)data)[-3] = 0;                     // object header (sync block index)
        ((nint*)data)[-2] = ByteArrayMethodTable;  // the object reference points here
        ((long*)data)[-1] = (uint)length;          // length, then 4 bytes of padding
        nint reference = (nint)(data - 2 * sizeof(nint));
        return Unsafe.As<nint, byte[]>(ref reference);
    }
}
