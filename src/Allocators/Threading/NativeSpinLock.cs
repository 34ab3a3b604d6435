using System.Runtime.CompilerServices;

namespace Allocators.Threading;

/// <summary>
/// A test-and-test-and-set lock on an <see cref="int"/> that lives in native memory (the kernel's spinlock_t),
/// so that lock words sit inside native metadata such as a zone. Waiters spin, then yield the processor; they never
/// sleep: a 1 ms Thread.Sleep(1) for a lock held a few microseconds stalled whole workloads (critical sections here
/// are short, and a preempted holder gets the processor back when waiters yield).
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
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}
