namespace Allocators.Slab;

/// <summary>An object constructor run once when a slab is created, for every object in it (the kernel's ctor).</summary>
public unsafe delegate void SlabConstructor(void* obj);
