using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace Allocators.Cli.Inspection;

/// <summary>Read-only access to another address space: a live process or a core dump.</summary>
internal interface ITargetMemory
{
    /// <summary>Copies target memory at <paramref name="address"/> into <paramref name="buffer"/>; returns the bytes read.</summary>
    int Read(ulong address, Span<byte> buffer);
}

/// <summary>Why an inspection could not be done: the target is missing, unreadable or not a compatible user of the library.</summary>
internal sealed class TargetException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Typed reads over an <see cref="ITargetMemory"/>, with the struct definitions of the library itself.</summary>
internal sealed class TargetReader(ITargetMemory memory)
{
    public ITargetMemory Memory => memory;

    public T Read<T>(ulong address) where T : unmanaged
    {
        T value = default;
        Span<byte> bytes = MemoryMarshal.AsBytes(new Span<T>(ref value));
        ReadExactly(address, bytes, typeof(T).Name);
        return value;
    }

    public T[] ReadArray<T>(ulong address, int count) where T : unmanaged
    {
        var result = new T[count];
        if (count > 0) ReadExactly(address, MemoryMarshal.AsBytes(result.AsSpan()), $"{typeof(T).Name}[{count}]");
        return result;
    }

    public void ReadExactly(ulong address, Span<byte> bytes, string what)
    {
        if (address == 0) throw new TargetException($"cannot read {what}: null pointer in the target");
        int read = memory.Read(address, bytes);
        if (read != bytes.Length)
            throw new TargetException($"cannot read {what} ({bytes.Length} bytes) at 0x{address:x} in the target (got {read})");
    }

    public ulong ReadPointer(ulong address) => Read<ulong>(address);

    /// <summary>A NUL-terminated UTF-8 string of at most <paramref name="max"/> bytes.</summary>
    public string ReadUtf8(ulong address, int max = 4096)
    {
        if (address == 0) return "";
        var bytes = new List<byte>();
        Span<byte> buffer = stackalloc byte[128];
        while (bytes.Count < max)
        {
            // A chunk never crosses into the next page: the string's own pages are readable up to its terminator, the
            // page after its end may not be mapped at all (a short heap block near the end of its mapping).
            ulong at = address + (ulong)bytes.Count;
            Span<byte> chunk = buffer[..(int)Math.Min((ulong)buffer.Length, 4096 - (at & 4095))];
            int read = memory.Read(at, chunk);
            if (read <= 0) break;
            int nul = chunk[..read].IndexOf((byte)0);
            if (nul >= 0)
            {
                bytes.AddRange(chunk[..nul].ToArray());
                return Encoding.UTF8.GetString(bytes.ToArray());
            }
            bytes.AddRange(chunk[..read].ToArray());
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    public static unsafe int SizeOf<T>() where T : unmanaged => Unsafe.SizeOf<T>();
}
