using System.IO.Compression;
using System.Xml.Linq;

namespace Allocators.Tests.Packaging;

/// <summary>What every packed package carries: README, license expression, repository, symbols, and its own files.</summary>
[Collection(PackagingCollection.Name)]
[Trait("Category", "Packaging")]
public sealed class PackageContentsTests(PackedFeed packages)
{
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
        var nuspec = metadata.Name.Namespace;
        Assert.Equal("README.md", (string?)metadata.Element(nuspec + "readme"));
        var license = metadata.Element(nuspec + "license");
        Assert.Equal("expression", (string?)license?.Attribute("type"));
        Assert.Equal("MIT", (string?)license);
        string repositoryUrl = RepositoryUrl();
        var repository = metadata.Element(nuspec + "repository");
        Assert.Equal("git", (string?)repository?.Attribute("type"));
        Assert.Equal(repositoryUrl, (string?)repository?.Attribute("url"));
        Assert.Equal(repositoryUrl, (string?)metadata.Element(nuspec + "projectUrl"));
        Assert.False(string.IsNullOrWhiteSpace((string?)metadata.Element(nuspec + "description")));
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
        var metadata = Metadata(zip, id);
        var dependencies = metadata.Descendants(metadata.Name.Namespace + "dependency").Select(d => ((string?)d.Attribute("id"), (string?)d.Attribute("version"))).ToArray();
        if (dependency is null) Assert.Empty(dependencies);
        else Assert.Equal([(dependency, packages.Version)], dependencies);
    }

    [Fact]
    public void AspNetCorePackageNeedsTheSharedFramework()
    {
        using var zip = ZipFile.OpenRead(packages.Package("Allocators.AspNetCore"));
        var metadata = Metadata(zip, "Allocators.AspNetCore");
        var frameworks = metadata.Descendants(metadata.Name.Namespace + "frameworkReference").Select(f => (string?)f.Attribute("name"));
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
        // Native binaries for every platform made it 80 MB: none is needed (charts are SVG text). Managed
        // platform-specific assemblies (runtimes/win/lib/...) of ClrMD's dependencies are small and stay.
        Assert.DoesNotContain(names, n => n.Contains("/native/", StringComparison.Ordinal) || n.EndsWith(".so", StringComparison.Ordinal) || n.EndsWith(".dylib", StringComparison.Ordinal));
        Assert.True(file.Length < ToolPackageTests.MaxBytes, $"the tool package is {file.Length / 1048576.0:0.0} MiB");
    }

    /// <summary>The nuspec's metadata element; its namespace is the nuspec schema version NuGet chose for the package.</summary>
    private static XElement Metadata(ZipArchive zip, string id)
    {
        using var stream = zip.GetEntry($"{id}.nuspec")!.Open();
        var root = XDocument.Load(stream).Root!;
        return root.Element(root.Name.Namespace + "metadata")!;
    }

    /// <summary>The repository URL Directory.Build.props gives every package.</summary>
    private string RepositoryUrl()
    {
        var props = XDocument.Load(Path.Combine(packages.Repository, "Directory.Build.props"));
        return props.Descendants("RepositoryUrl").Single().Value;
    }
}
