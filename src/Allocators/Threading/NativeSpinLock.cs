using System.Runtime.CompilerServices;

namespace Allocators.Threading;

/// <summary>
/// A test-and-test-and-set lock on an <see cref="int"/> that lives in native memory (the kernel's spinlock_t),
/// so that lock words sit inside native metadata such as a zone. Waiters spin, then yield, then sleep.
/// </summary>
internal static unsafe class NativeSpinLock
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Acquire(int* word)
    {
        if (Interlocked.CompareExchange(ref *word, 1, 0) != 0) AcquireContended(word);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryAcquire(int* word) => Interlocked.CompareExchange(ref *word, 1, 0) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Release(int* word) => Volatile.Write(ref *word, 0);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AcquireContended(int* word)
    {
        var spin = new SpinWait();
        while (true)
        {
            if (Volatile.Read(ref *word) == 0 && Interlocked.CompareExchange(ref *word, 1, 0) == 0) return;
            spin.SpinOnce(sleep1Threshold: 30);
        }
    }
}
