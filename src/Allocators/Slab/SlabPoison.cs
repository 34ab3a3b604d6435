namespace Allocators.Slab;

/// <summary>The debug byte values of include/linux/poison.h as SLUB uses them.</summary>
public static class SlabPoison
{
    /// <summary>POISON_INUSE: allocated but not initialised.</summary>
    public const byte InUse = 0x5a;
    /// <summary>POISON_FREE: body of a free object.</summary>
    public const byte Free = 0x6b;
    /// <summary>POISON_END: last byte of a poisoned free object.</summary>
    public const byte End = 0xa5;
    /// <summary>SLUB_RED_ACTIVE: red zone of an allocated object.</summary>
    public const byte RedActive = 0xcc;
    /// <summary>SLUB_RED_INACTIVE: red zone of a free object.</summary>
    public const byte RedInactive = 0xbb;
}
