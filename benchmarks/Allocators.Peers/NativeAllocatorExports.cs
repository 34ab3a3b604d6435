using Allocators.Native;

namespace Allocators.Peers;

/// <summary>The five entry points resolved from one allocator library.</summary>
internal unsafe readonly struct NativeAllocatorExports
{
    public NativeAllocatorExports(nint malloc, nint free, nint calloc, nint realloc, nint alignedAlloc)
    {
        Malloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*>)malloc;
        Free = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void>)free;
        Calloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*>)calloc;
        Realloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, nuint, void*>)realloc;
        AlignedAlloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*>)alignedAlloc;
    }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, void*> Malloc { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void> Free { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*> Calloc { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, nuint, void*> Realloc { get; }

    public delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*> AlignedAlloc { get; }
}
