using System.IO.Compression;
using System.Xml.Linq;

namespace Allocators.Tests.Packaging;

/// <summary>What every packed package carries: README, license expression, repository, symbols, and its own files.</summary>
[Collection(PackagingCollection.Name)]
[Trait("Category", "Packaging")]
public sealed class PackageContentsTests(PackedFeed packages)
{
    private static readonly XNamespace Nuspec = "http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd";

    [Theory]
    [InlineData("Allocators.Native")]
    [InlineData("Allocators")]
    [InlineData("Allocators.AspNetCore")]
    [InlineData("Allocators.Cli")]
    public void PackageHasReadmeLicenseRepositoryAndSymbols(string id)
    {
        Assert.True(File.Exists(packages.Package(id, "snupkg")), $"{id}.{packages.Version}.snupkg missing");
        using var zip = ZipFile.OpenRead(packages.Package(id));
        Assert.Contains("README.md", zip.Entries.Select(e => e.FullName));
        var metadata = Metadata(zip, id);
        Assert.Equal("README.md", (string?)metadata.Element(Nuspec + "readme"));
        var license = metadata.Element(Nuspec + "license");
        Assert.Equal("expression", (string?)license?.Attribute("type"));
        Assert.Equal("MIT", (string?)license);
        string repositoryUrl = RepositoryUrl();
        var repository = metadata.Element(Nuspec + "repository");
        Assert.Equal("git", (string?)repository?.Attribute("type"));
        Assert.Equal(repositoryUrl, (string?)repository?.Attribute("url"));
        Assert.Equal(repositoryUrl, (string?)metadata.Element(Nuspec + "projectUrl"));
        Assert.False(string.IsNullOrWhiteSpace((string?)metadata.Element(Nuspec + "description")));
    }

    [Theory]
    [InlineData("Allocators.Native", null)]
    [InlineData("Allocators", "Allocators.Native")]
    [InlineData("Allocators.AspNetCore", "Allocators")]
    public void LibraryPackageHasItsAssemblyDocsAndDependency(string id, string? dependency)
    {
        using var zip = ZipFile.OpenRead(packages.Package(id));
        var names = zip.Entries.Select(e => e.FullName).ToArray();
        Assert.Contains($"lib/net10.0/{id}.dll", names);
        Assert.Contains($"lib/net10.0/{id}.xml", names);
        var dependencies = Metadata(zip, id).Descendants(Nuspec + "dependency").Select(d => ((string?)d.Attribute("id"), (string?)d.Attribute("version"))).ToArray();
        if (dependency is null) Assert.Empty(dependencies);
        else Assert.Equal([(dependency, packages.Version)], dependencies);
    }

    [Fact]
    public void AspNetCorePackageNeedsTheSharedFramework()
    {
        using var zip = ZipFile.OpenRead(packages.Package("Allocators.AspNetCore"));
        var frameworks = Metadata(zip, "Allocators.AspNetCore").Descendants(Nuspec + "frameworkReference").Select(f => (string?)f.Attribute("name"));
        Assert.Equal(["Microsoft.AspNetCore.App"], frameworks);
    }

    [Fact]
    public void ToolPackageIsManagedCodeOnly()
    {
        var file = new FileInfo(packages.Package("Allocators.Cli"));
        using var zip = ZipFile.OpenRead(file.FullName);
        var names = zip.Entries.Select(e => e.FullName).ToArray();
        Assert.Contains("tools/net10.0/any/DotnetToolSettings.xml", names);
        Assert.Contains("tools/net10.0/any/Microsoft.Diagnostics.Runtime.dll", names);
        // Native binaries for every platform made it 80 MB: none is needed (charts are SVG text).
        Assert.DoesNotContain(names, n => n.Contains("/runtimes/", StringComparison.Ordinal) || n.EndsWith(".so", StringComparison.Ordinal) || n.EndsWith(".dylib", StringComparison.Ordinal));
        Assert.True(file.Length < 10L << 20, $"the tool package is {file.Length / 1048576.0:0.0} MiB");
    }

    private static XElement Metadata(ZipArchive zip, string id)
    {
        using var stream = zip.GetEntry($"{id}.nuspec")!.Open();
        return XDocument.Load(stream).Root!.Element(Nuspec + "metadata")!;
    }

    /// <summary>The repository URL Directory.Build.props gives every package.</summary>
    private string RepositoryUrl()
    {
        var props = XDocument.Load(Path.Combine(packages.Repository, "Directory.Build.props"));
        return props.Descendants("RepositoryUrl").Single().Value;
    }
}
