namespace Allocators.Kfence;

/// <summary>One bug KFENCE found without a fault: a canary overwritten, an invalid or double free of a pool object.</summary>
/// <param name="Cache">Name of the cache the object came from.</param>
/// <param name="Problem">The kind, e.g. "memory corruption", "double free".</param>
/// <param name="Address">The first damaged byte, or the pointer freed.</param>
/// <param name="Text">The full report, in KFENCE's format.</param>
public sealed record KfenceReport(string Cache, string Problem, nuint Address, string Text)
{
    /// <inheritdoc/>
    public override string ToString() => Text;
}
