using System.Runtime.InteropServices;
using System.Text;

namespace Allocators.Common;

/// <summary>NUL-terminated UTF-8 copies of names in native memory, so an inspector can read them from outside.</summary>
internal static unsafe class NativeStrings
{
    public static byte* Create(string value)
    {
        int length = Encoding.UTF8.GetByteCount(value);
        var p = (byte*)NativeMemory.Alloc((nuint)length + 1);
        Encoding.UTF8.GetBytes(value, new Span<byte>(p, length));
        p[length] = 0;
        return p;
    }
}

/// <summary>A growable native array of native strings indexed by id (call sites for StoreUser tracks).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NativeStringTable
{
    public int Count;
    public int Capacity;
    public byte** Items;

    public static NativeStringTable* Create()
    {
        var t = (NativeStringTable*)NativeMemory.AllocZeroed((nuint)sizeof(NativeStringTable));
        t->Capacity = 64;
        t->Items = (byte**)NativeMemory.AllocZeroed((nuint)t->Capacity, (nuint)sizeof(byte*));
        return t;
    }

    /// <summary>Sets entry <paramref name="id"/>; the caller serialises writers. Readers in another process may see the old array.</summary>
    public static void Add(NativeStringTable* t, int id, string value)
    {
        if (id >= t->Capacity)
        {
            int capacity = Math.Max(id + 1, t->Capacity * 2);
            var items = (byte**)NativeMemory.AllocZeroed((nuint)capacity, (nuint)sizeof(byte*));
            Buffer.MemoryCopy(t->Items, items, capacity * sizeof(byte*), t->Count * sizeof(byte*));
            t->Items = items; // the old array is leaked on purpose: an inspector may be reading it
            t->Capacity = capacity;
        }
        t->Items[id] = NativeStrings.Create(value);
        if (id >= t->Count) t->Count = id + 1;
    }
}
