using System.Runtime.InteropServices;

namespace Allocators.Native;

public static unsafe partial class Libc
{
    /// <summary>Bytes reserved for glibc's <c>pthread_attr_t</c> (56 on Linux x86-64, rounded up).</summary>
    public const int PthreadAttrSize = 64;

    /// <summary><c>pthread_self(3)</c>: the calling thread's handle.</summary>
    /// <returns>The <c>pthread_t</c> of the calling thread.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_self")]
    [SuppressGCTransition]
    public static partial nuint PthreadSelf();

    /// <summary>
    /// <c>pthread_getattr_np(3)</c>: fills <paramref name="attr"/> (<see cref="PthreadAttrSize"/> bytes) with the
    /// attributes of the running thread <paramref name="thread"/>, its actual stack included. Returns 0 or an error
    /// number; a filled <paramref name="attr"/> must be given to <see cref="PthreadAttrDestroy"/>.
    /// </summary>
    /// <param name="thread">A thread handle, e.g. <see cref="PthreadSelf"/>.</param>
    /// <param name="attr">Storage for a <c>pthread_attr_t</c>.</param>
    /// <returns>0 on success, else an error number.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_getattr_np")]
    public static partial int PthreadGetattrNp(nuint thread, void* attr);

    /// <summary><c>pthread_attr_getstack(3)</c>: the lowest address and the size of the stack in <paramref name="attr"/>.</summary>
    /// <param name="attr">Attributes filled by <see cref="PthreadGetattrNp"/>.</param>
    /// <param name="stackAddr">Receives the lowest address of the stack.</param>
    /// <param name="stackSize">Receives the stack's size in bytes.</param>
    /// <returns>0 on success, else an error number.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_attr_getstack")]
    public static partial int PthreadAttrGetstack(void* attr, void** stackAddr, nuint* stackSize);

    /// <summary><c>pthread_attr_destroy(3)</c>: releases what <see cref="PthreadGetattrNp"/> allocated.</summary>
    /// <param name="attr">Attributes filled by <see cref="PthreadGetattrNp"/>.</param>
    /// <returns>0 on success, else an error number.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_attr_destroy")]
    public static partial int PthreadAttrDestroy(void* attr);

    /// <summary>
    /// <c>pthread_key_create(3)</c>: a new thread-specific data key whose <paramref name="destructor"/> glibc calls on
    /// each exiting thread whose value for the key is not null, with that value, before the thread's stack is released.
    /// </summary>
    /// <param name="key">Receives the key.</param>
    /// <param name="destructor">Native code called as <c>void destructor(void* value)</c>, or null.</param>
    /// <returns>0 on success, else an error number.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_key_create")]
    public static partial int PthreadKeyCreate(uint* key, void* destructor);

    /// <summary><c>pthread_setspecific(3)</c>: the calling thread's value for <paramref name="key"/>.</summary>
    /// <param name="key">A key from <see cref="PthreadKeyCreate"/>.</param>
    /// <param name="value">The value; the key's destructor receives it when the thread exits.</param>
    /// <returns>0 on success, else an error number.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_setspecific")]
    public static partial int PthreadSetspecific(uint key, void* value);

    /// <summary><c>pthread_getspecific(3)</c>: the calling thread's value for <paramref name="key"/>, or null.</summary>
    /// <param name="key">A key from <see cref="PthreadKeyCreate"/>.</param>
    /// <returns>The value last set on this thread, or null.</returns>
    [LibraryImport(LibraryName, EntryPoint = "pthread_getspecific")]
    [SuppressGCTransition]
    public static partial void* PthreadGetspecific(uint key);
}
