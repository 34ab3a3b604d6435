using System.Numerics;
using System.Runtime.CompilerServices;

namespace Allocators.Buffers;

/// <summary>
/// The pool's size classes: powers of two from 16 bytes to 4 MiB, and the pool's default size as a class of its own
/// when it is not a power of two (so that "any size" wastes nothing). A request gets the smallest class that holds it.
/// </summary>
internal static class PoolSizeClasses
{
    /// <summary>log2 of the smallest class; smaller buffers would be mostly array header.</summary>
    public const int MinShift = 4;

    /// <summary>log2 of the largest class: one max-order page block.</summary>
    public const int MaxShift = 22;

    /// <summary>Index of the default-size class, used only when the default size is not a power of two.</summary>
    public const int DefaultClass = MaxShift - MinShift + 1;

    /// <summary>Number of class slots (the power-of-two classes and the default one).</summary>
    public const int Count = DefaultClass + 1;

    /// <summary>The power-of-two class holding <paramref name="size"/> bytes (1 .. 4 MiB).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PowerOfTwoClass(int size)
        => size <= 1 << MinShift ? 0 : BitOperations.Log2((uint)size - 1) + 1 - MinShift;

    /// <summary>The buffer length of power-of-two class <paramref name="index"/>.</summary>
    public static int PowerOfTwoLength(int index) => 1 << (index + MinShift);
}
