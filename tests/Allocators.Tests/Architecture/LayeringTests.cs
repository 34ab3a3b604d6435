using ArchUnitNET.Domain;
using ArchUnitNET.Loader;
using static ArchUnitNET.Fluent.ArchRuleDefinition;
using ArchUnitNET.xUnit;

namespace Allocators.Tests.Architecture;

/// <summary>
/// The library's layers (docs/architecture.md) as a rule over its compiled types: a namespace may use only the
/// namespaces below it. A type that references a higher layer (a field, a call, a parameter, a base type) fails here.
/// </summary>
public sealed class LayeringTests
{
    private static readonly ArchUnitNET.Domain.Architecture Library =
        new ArchLoader().LoadAssemblies(typeof(MemorySystem).Assembly).Build();

    /// <summary>Each namespace (without the <c>Allocators.</c> prefix; "" is the root) and what it may use.</summary>
    public static TheoryData<string, string[]> Layers => new()
    {
        { "Common", [] },
        { "Collections", [] },
        { "Threading", [] },
        { "Rcu", ["Threading"] },
        { "Kasan", ["Common", "Threading"] },
        { "Physical", ["Common", "Threading", "Kasan"] },
        { "PageAlloc", ["Common", "Threading", "Physical", "Rcu", "Kasan"] },
        { "Kfence", ["Common", "Threading", "Physical", "PageAlloc"] },
        { "Slab", ["Common", "Threading", "Physical", "PageAlloc", "Rcu", "Kfence", "Kasan"] },
        { "Mempool", ["Common", "Threading", "Physical", "PageAlloc", "Slab", "Kasan"] },
        { "Percpu", ["Common", "Threading", "Physical", "PageAlloc", "Kasan"] },
        { "Filemap", ["Common", "Collections", "Threading", "Physical", "PageAlloc", "Rcu", "Kasan"] },
        { "Swap", ["Common", "Threading", "Physical", "PageAlloc", "Filemap", "Kasan"] },
        { "Reclaim", ["Common", "Threading", "Physical", "PageAlloc", "Rcu", "Slab", "Filemap", "Kasan"] },
        { "Mmu", ["Common", "Collections", "Threading", "Physical", "PageAlloc", "Filemap", "Swap", "Reclaim", "Kasan"] },
        { "Vmalloc", ["Common", "Collections", "Threading", "Physical", "PageAlloc", "Slab", "Filemap", "Swap", "Reclaim", "Mmu", "Rcu", "Kasan"] },
        { "Buffers", ["Common", "Threading", "Physical", "PageAlloc", "Slab", "Kasan"] },
        { "Managed", ["Common", "Threading", "Physical", "PageAlloc", "Slab", "Kasan"] },
        { "Diagnostics", ["Common", "Collections", "Threading", "Physical", "PageAlloc", "Slab", "Percpu", "Filemap", "Swap", "Mmu", "Vmalloc", "Reclaim", "Buffers", "Managed", "Kasan"] },
    };

    /// <summary>Every namespace below the root, as the layer table lists them.</summary>
    private static readonly string[] All = [.. Layers.Select(row => (string)row[0])];

    [Theory]
    [MemberData(nameof(Layers))]
    public void ANamespaceUsesOnlyTheLayersBelowIt(string layer, string[] mayUse)
    {
        string[] forbidden = [.. All.Where(n => n != layer && !mayUse.Contains(n))];
        // The root namespace (MemorySystem, its registry and metrics) is the top: nothing below may use it.
        string pattern = $"^Allocators(\\.({string.Join("|", forbidden)}))?$";
        Types().That().ResideInNamespaceMatching($"^Allocators\\.{layer}$")
            .Should().NotDependOnAny(Types().That().ResideInNamespaceMatching(pattern))
            .Because($"Allocators.{layer} sits below {string.Join(", ", forbidden.Append("the root"))} (docs/architecture.md)")
            .Check(Library);
    }

    [Fact]
    public void EveryNamespaceIsInTheLayerTable()
    {
        var namespaces = Library.Namespaces.Select(n => n.FullName).Where(n => n.StartsWith("Allocators", StringComparison.Ordinal)).ToHashSet();
        var known = All.Select(n => "Allocators." + n).Append("Allocators").ToHashSet();
        Assert.Empty(namespaces.Except(known));
    }

    [Fact]
    public void TheRuleCatchesAnUpwardReference()
    {
        // The root uses every layer; the same rule written for it must fail, or the rules above prove nothing.
        Assert.ThrowsAny<Exception>(() => Types().That().ResideInNamespaceMatching("^Allocators$")
            .Should().NotDependOnAny(Types().That().ResideInNamespaceMatching("^Allocators\\.PageAlloc$"))
            .Check(Library));
    }
}
