using System.Diagnostics;
using System.Runtime.CompilerServices;
using Allocators.Slab;

namespace Allocators.Tests.Slab;

/// <summary>
/// How allocation sites are named: the caller's method and offset when the runtime has method names (the JIT, NativeAOT
/// with stack trace data), image offsets after a clear marker when it has none. tests/Consumer covers NativeAOT.
/// </summary>
public sealed class CallerNameTests
{
    [Fact]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void NamesTheFirstFrameOutsideTheLibrary()
    {
        string site = CallerName.Of(new StackTrace(0, fNeedFileInfo: false));
        Assert.StartsWith($"{nameof(CallerNameTests)}.{nameof(NamesTheFirstFrameOutsideTheLibrary)}+0x", site);
    }

    [Fact]
    public void WithoutMethodNamesTheSiteIsMarkedAndListsImageOffsets()
    {
        Assert.Equal("<unknown, AOT> image+0x1f2e0 < image+0x2a", CallerName.Unnamed([0x1f2e0, 0x2a]));
        Assert.Equal(CallSiteTable.UnknownUnderAot, CallerName.Unnamed([]));
        // Enough frames to tell the callers of a helper apart, not the whole stack.
        string deep = CallerName.Unnamed(Enumerable.Range(1, 50).Select(i => (long)i));
        Assert.Equal(CallerName.UnnamedFrames, deep.Split(" < ").Length);
    }

    [Theory]
    [InlineData("App.Web.Handlers+Get", "Handlers+Get")]
    [InlineData("Program", "Program")]
    [InlineData("App.Box`1[System.Collections.Generic.List`1]", "Box`1[System.Collections.Generic.List`1]")]
    [InlineData(null, "")]
    public void TypeNamesLoseTheirNamespace(string? full, string expected) => Assert.Equal(expected, CallerName.ShortTypeName(full));
}
