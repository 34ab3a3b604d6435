namespace Allocators.PageAlloc;

/// <summary>One run of the registered shrinkers for a page allocation about to fail (<see cref="PageAllocator.ShrinkersRan"/>).</summary>
/// <param name="Order">The order of the allocation that needed the pages.</param>
/// <param name="Shrinkers">How many shrinkers ran.</param>
/// <param name="PagesFreed">The pages they reported freed.</param>
/// <param name="Elapsed">How long the run took, draining the per-thread lists included.</param>
public readonly record struct ShrinkerRun(int Order, int Shrinkers, long PagesFreed, TimeSpan Elapsed);
