using System.Buffers.Binary;

namespace Allocators.Cli.Inspection;

/// <summary>
/// Checks a dump file before ClrMD opens it. ClrMD reads an ELF core's headers lazily and, for a truncated file, fails
/// deep inside (an IOException for a cut program header table, a DAC that will not load for cut memory), so a file
/// that is not a core dump, or not all of one, is named here from its headers and its length.
/// </summary>
internal static class CoreFile
{
    private const ushort CoreType = 4;          // ET_CORE
    private const ushort ExtendedCount = 0xffff; // PN_XNUM: the program header count is in section header 0's sh_info

    private static ReadOnlySpan<byte> ElfMagic => [0x7f, (byte)'E', (byte)'L', (byte)'F'];

    private static ReadOnlySpan<byte> MachO64Magic => [0xcf, 0xfa, 0xed, 0xfe];

    private static ReadOnlySpan<byte> MachO32Magic => [0xce, 0xfa, 0xed, 0xfe];

    /// <summary>Throws a <see cref="TargetException"/> saying what is wrong when <paramref name="path"/> is not a whole core dump.</summary>
    public static void Check(string path)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            CheckHeaders(file, $"dump {path}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TargetException($"cannot read dump {path}: {e.Message}", e);
        }
    }

    private static void CheckHeaders(FileStream file, string what)
    {
        long length = file.Length;
        Span<byte> header = stackalloc byte[64];
        int read = file.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        header = header[..read];
        // ClrMD also reads Windows minidumps and macOS cores; it checks those itself.
        if (header.StartsWith("MDMP"u8) || header.StartsWith(MachO64Magic) || header.StartsWith(MachO32Magic)) return;
        if (!header.StartsWith(ElfMagic))
            throw new TargetException($"{what} is not a core dump: it has no ELF header ({length} bytes)");
        if (header.Length < 6 || header[4] is not (1 or 2) || header[5] is not (1 or 2))
            throw new TargetException($"{what} is truncated or corrupt: its ELF identification is incomplete ({length} bytes)");
        bool is64 = header[4] == 2;
        var elf = new ByteOrder(header[5] == 2);
        int headerSize = is64 ? 64 : 52;
        if (header.Length < headerSize) throw Truncated(what, length, (ulong)headerSize, "the ELF header");
        ushort type = elf.U16(header, 16);
        if (type != CoreType)
            throw new TargetException($"{what} is an ELF file but not a core dump (its ELF type is {type}, a core dump's is {CoreType})");

        ulong phoff = is64 ? elf.U64(header, 0x20) : elf.U32(header, 0x1c);
        ulong shoff = is64 ? elf.U64(header, 0x28) : elf.U32(header, 0x20);
        int phentsize = elf.U16(header, is64 ? 0x36 : 0x2a);
        ulong count = elf.U16(header, is64 ? 0x38 : 0x2c);
        if (phentsize < (is64 ? 56 : 32))
            throw new TargetException($"{what} is corrupt: program header entries of {phentsize} bytes");
        if (count == ExtendedCount)
        {
            ulong infoEnd = shoff + (is64 ? 0x2cUL : 0x1cUL) + 4; // section header 0's sh_info
            if (shoff > (ulong)length || infoEnd > (ulong)length) throw Truncated(what, length, infoEnd, "section header 0");
            Span<byte> info = stackalloc byte[4];
            file.Position = (long)infoEnd - 4;
            file.ReadExactly(info);
            count = elf.U32(info, 0);
        }
        // Each term is checked against the length first, so the sums cannot wrap.
        if (phoff > (ulong)length) throw Truncated(what, length, phoff, "the program header table's start");
        ulong tableEnd = phoff + count * (ulong)phentsize;
        if (tableEnd > (ulong)length) throw Truncated(what, length, tableEnd, $"its {count} program headers");

        // The segments' file data: a dump cut short keeps its headers, so only the last segments' ends show it.
        ulong needed = tableEnd;
        var entry = new byte[phentsize];
        file.Position = (long)phoff;
        for (ulong i = 0; i < count; i++)
        {
            file.ReadExactly(entry);
            ulong offset = is64 ? elf.U64(entry, 8) : elf.U32(entry, 4);
            ulong size = is64 ? elf.U64(entry, 32) : elf.U32(entry, 16);
            if (size == 0) continue;
            ulong end = offset + size;
            if (end < offset) throw new TargetException($"{what} is corrupt: segment {i} claims {size} bytes at offset {offset}");
            needed = Math.Max(needed, end);
        }
        if (needed > (ulong)length) throw Truncated(what, length, needed, "its segments");
    }

    private static TargetException Truncated(string what, long length, ulong needed, string part)
        => new($"{what} is truncated: it has {length} bytes, {needed} are needed for {part}");

    /// <summary>Integer fields in the byte order the ELF header names.</summary>
    private readonly record struct ByteOrder(bool BigEndian)
    {
        public ushort U16(ReadOnlySpan<byte> b, int at) => BigEndian ? BinaryPrimitives.ReadUInt16BigEndian(b[at..]) : BinaryPrimitives.ReadUInt16LittleEndian(b[at..]);

        public uint U32(ReadOnlySpan<byte> b, int at) => BigEndian ? BinaryPrimitives.ReadUInt32BigEndian(b[at..]) : BinaryPrimitives.ReadUInt32LittleEndian(b[at..]);

        public ulong U64(ReadOnlySpan<byte> b, int at) => BigEndian ? BinaryPrimitives.ReadUInt64BigEndian(b[at..]) : BinaryPrimitives.ReadUInt64LittleEndian(b[at..]);
    }
}
