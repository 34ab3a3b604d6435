using System.Reflection;
using System.Runtime.CompilerServices;
using Allocators.Managed;

namespace Allocators.Tests.Managed;

/// <summary>
/// The safe faces compile in a consumer without <c>AllowUnsafeBlocks</c>: no public or protected member of a public
/// type in <c>Allocators.Managed</c> has a pointer (or function pointer) anywhere in its signature, and the tests that
/// exercise them are written without the <c>unsafe</c> keyword (checked on their own source files). A consumer project
/// is not built here: the signature check is what such a build would find.
/// </summary>
public class ManagedApiHasNoPointersTests
{
    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static IEnumerable<Type> PublicManagedTypes() => typeof(SlabMemoryOwner).Assembly.GetExportedTypes()
        .Where(t => t.Namespace == "Allocators.Managed");

    /// <summary>True when <paramref name="type"/> is or contains a pointer: T*, T*[], ref T*, Span&lt;T*&gt;, delegate*.</summary>
    private static bool HasPointer(Type type)
    {
        if (type.IsPointer || type.IsFunctionPointer || type.IsUnmanagedFunctionPointer) return true;
        if (type.HasElementType) return HasPointer(type.GetElementType()!);
        return type.IsGenericType && type.GetGenericArguments().Any(HasPointer);
    }

    private static bool Visible(MethodBase? m) => m is not null && (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly);

    private static IEnumerable<string> PointerMembers(Type type)
    {
        foreach (MemberInfo member in type.GetMembers(Declared))
        {
            IEnumerable<Type> signature = member switch
            {
                MethodBase m when Visible(m) => m.GetParameters().Select(p => p.ParameterType)
                    .Concat(m is MethodInfo mi ? [mi.ReturnType] : []),
                PropertyInfo p when Visible(p.GetMethod) || Visible(p.SetMethod) => [p.PropertyType],
                FieldInfo f when f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly => [f.FieldType],
                EventInfo e when Visible(e.AddMethod) => [e.EventHandlerType!],
                _ => [],
            };
            if (signature.Any(HasPointer)) yield return $"{type.Name}.{member.Name}";
        }
    }

    [Fact]
    public void TheManagedNamespaceHasTheFacesItPromises()
    {
        string[] names = PublicManagedTypes().Select(t => t.Name).ToArray();
        Assert.Contains(nameof(NativeBuffer), names);
        Assert.Contains(nameof(SlabMemoryOwner), names);
        Assert.Contains("KmemHandle`1", names);
        Assert.Contains(nameof(NativeBufferWriter), names);
        Assert.Contains(nameof(SlabAllocatorExtensions), names);
        Assert.Contains(nameof(KmemCacheExtensions), names);
    }

    [Fact]
    public void NoPublicMemberOfTheManagedNamespaceHasAPointerInItsSignature()
    {
        Assert.Empty(PublicManagedTypes().SelectMany(PointerMembers));
    }

    [Fact]
    public void TheCheckFindsPointersWhereThereAreSome()
    {
        // The raw API is the control: it must be flagged, or the check above proves nothing.
        Assert.Contains("SlabAllocator.Kmalloc", PointerMembers(typeof(Allocators.Slab.SlabAllocator)));
        Assert.Contains("KmemCache`1.Free", PointerMembers(typeof(Allocators.Slab.KmemCache<>)));
    }

    [Fact]
    public void TheTestsThatUseTheFacesAreWrittenWithoutUnsafe()
    {
        string folder = Path.GetDirectoryName(ThisFile())!;
        string[] files = Directory.GetFiles(folder, "*.cs");
        Assert.NotEmpty(files);
        foreach (string file in files)
        {
            if (file == ThisFile()) continue; // this file names the keyword it looks for
            Assert.DoesNotMatch(@"\bunsafe\b|\bfixed\s*\(|\bstackalloc\b.*\*", File.ReadAllText(file));
        }
    }

    private static string ThisFile([CallerFilePath] string path = "") => path;
}
