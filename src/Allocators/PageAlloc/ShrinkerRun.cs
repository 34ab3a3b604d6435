namespace Allocators.PageAlloc;

/// <summary>
/// What a shrinker is asked to do (struct shrink_control): the allocation's <paramref name="Gfp"/> (no I/O without
/// <see cref="Gfp.Io"/>, no file-system work without <see cref="Gfp.Fs"/>), the <paramref name="Node"/> short of
/// memory, and <paramref name="NrToScan"/>, how many pages to try to free before returning.
/// </summary>
/// <param name="Gfp">The allocation's flags.</param>
/// <param name="Node">The node the allocation wants memory on.</param>
/// <param name="NrToScan">Pages to try for (the kernel's nr_to_scan, in pages here).</param>
public readonly record struct ShrinkControl(Gfp Gfp, int Node, long NrToScan);

/// <summary>One run of the registered shrinkers for a page allocation about to fail (<see cref="PageAllocator.ShrinkersRan"/>).</summary>
/// <param name="Order">The order of the allocation that needed the pages.</param>
/// <param name="Shrinkers">How many shrinkers ran.</param>
/// <param name="PagesFreed">The pages they reported freed.</param>
/// <param name="Elapsed">How long the run took, draining the per-thread lists included.</param>
public readonly record struct ShrinkerRun(int Order, int Shrinkers, long PagesFreed, TimeSpan Elapsed);
