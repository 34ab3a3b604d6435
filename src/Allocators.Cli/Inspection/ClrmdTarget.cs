using System.Runtime.InteropServices;
using Microsoft.Diagnostics.Runtime;

namespace Allocators.Cli.Inspection;

/// <summary>
/// A live process (attached read-only with ptrace, suspended while attached unless asked otherwise) or a core dump,
/// opened with ClrMD. Only memory is read: the registry root comes from the static field
/// <c>Allocators.Diagnostics.NativeRegistry.Root</c> through the runtime's DAC, everything else from raw bytes.
/// </summary>
internal sealed class ClrmdTarget : ITargetMemory, IDisposable
{
    private const string RegistryType = "Allocators.Diagnostics.NativeRegistry";
    private const string RegistryField = "Root";
    private const string LibraryModule = "Allocators.dll";
    private const string DacName = "libmscordaccore.so";

    private readonly DataTarget _target;
    private readonly ClrRuntime _runtime;

    private ClrmdTarget(DataTarget target, ClrRuntime runtime, string description, bool isDump)
    {
        _target = target;
        _runtime = runtime;
        Description = description;
        IsDump = isDump;
    }

    /// <summary>True for a core dump, false for a live process.</summary>
    public bool IsDump { get; }

    /// <summary>What was opened, e.g. <c>process 1234</c>.</summary>
    public string Description { get; }

    /// <summary>Attaches to process <paramref name="pid"/>.</summary>
    public static ClrmdTarget Attach(int pid, bool suspend, string? dacPath)
    {
        if (pid == Environment.ProcessId) throw new TargetException("a process cannot inspect itself; run the inspector from another process");
        try
        {
            System.Diagnostics.Process.GetProcessById(pid).Dispose();
        }
        catch (ArgumentException)
        {
            throw new TargetException($"no process with id {pid}");
        }
        DataTarget target;
        try
        {
            target = DataTarget.AttachToProcess(pid, suspend, Options());
        }
        catch (Exception e) when (e is not TargetException)
        {
            throw new TargetException($"cannot attach to process {pid}: {e.Message} (attaching needs ptrace permission: same user with ptrace_scope 0, or root/CAP_SYS_PTRACE)", e);
        }
        return Open(target, dacPath, $"process {pid}", isDump: false);
    }

    /// <summary>Opens a core dump made by createdump (default or --full; --normal/--triage dumps lose static fields).</summary>
    public static ClrmdTarget LoadDump(string path, string? dacPath)
    {
        if (!File.Exists(path)) throw new TargetException($"dump file not found: {path}");
        CoreFile.Check(path);
        DataTarget target;
        try
        {
            target = DataTarget.LoadDump(path, Options());
        }
        catch (Exception e)
        {
            throw new TargetException($"cannot open dump {path}: {e.Message}", e);
        }
        return Open(target, dacPath, $"dump {path}", isDump: true);
    }

    private static DataTargetOptions Options() => new() { SymbolPaths = [] };

    private static ClrmdTarget Open(DataTarget target, string? dacPath, string description, bool isDump)
    {
        try
        {
            if (target.ClrVersions.Length == 0) throw new TargetException($"{description} has no .NET runtime loaded");
            ClrInfo clr = target.ClrVersions[0];
            ClrRuntime runtime = CreateRuntime(clr, dacPath, description);
            return new ClrmdTarget(target, runtime, description, isDump);
        }
        catch (Exception e)
        {
            target.Dispose();
            if (e is TargetException) throw;
            // ClrMD reads the target lazily: a file or process it cannot read fails here, not where it was opened.
            throw new TargetException($"cannot read {description}: {e.Message}", e);
        }
    }

    /// <summary>
    /// ClrMD 4.2 reads .NET 10's runtime version as 0.0 and so finds no DAC by itself: use the DAC that sits next to the
    /// target's libcoreclr.so (same machine), then our own runtime's, with the version check off.
    /// </summary>
    private static ClrRuntime CreateRuntime(ClrInfo clr, string? dacPath, string description)
    {
        var candidates = new List<string>();
        if (dacPath is not null) candidates.Add(dacPath);
        string? coreclr = clr.ModuleInfo.FileName;
        if (!string.IsNullOrEmpty(coreclr) && Path.GetDirectoryName(coreclr) is { } dir) candidates.Add(Path.Combine(dir, DacName));
        candidates.Add(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), DacName));
        var errors = new List<string>();
        foreach (string path in candidates.Distinct())
        {
            if (!File.Exists(path))
            {
                errors.Add($"{path}: not found");
                continue;
            }
            try
            {
                return clr.CreateRuntime(path, ignoreMismatch: true);
            }
            catch (Exception e)
            {
                errors.Add($"{path}: {e.Message}");
            }
        }
        try
        {
            return clr.CreateRuntime();
        }
        catch (Exception e)
        {
            errors.Add($"default DAC lookup: {e.Message}");
        }
        throw new TargetException($"cannot load a DAC for {description} (runtime {clr.Version}): {string.Join("; ", errors)}; pass --dac <path to {DacName}>");
    }

    /// <summary>The value of <c>NativeRegistry.Root</c> in the target (0 when no system was ever registered).</summary>
    public ulong FindRegistryRoot()
    {
        bool libraryLoaded = false;
        foreach (ClrModule module in _runtime.EnumerateModules())
        {
            string name = Path.GetFileName(module.Name ?? module.AssemblyName ?? "");
            if (!name.Equals(LibraryModule, StringComparison.OrdinalIgnoreCase)) continue;
            libraryLoaded = true;
            ClrType? type = module.GetTypeByName(RegistryType);
            if (type is null)
            {
                // Not loaded yet: the class is touched when the first memory system registers, so none ever did —
                // provided the library defines it at all.
                switch (DefinesRegistry(module))
                {
                    case true when IsDump:
                        throw new TargetException($"{Description}: the type {RegistryType} is not in the dump. Either the process never built a memory system, "
                            + "or the dump leaves out the runtime's type data (createdump --normal or --triage); make the dump with createdump's default or --full");
                    case true: return 0;
                    case false: throw new TargetException($"{Description} loads a {LibraryModule} without {RegistryType}.{RegistryField}: incompatible library version");
                    default: continue;
                }
            }
            ClrStaticField? field = type.GetStaticFieldByName(RegistryField);
            if (field is null)
                throw new TargetException($"{Description} loads {LibraryModule} but its {RegistryType} has no field {RegistryField}: incompatible library version");
            foreach (ClrAppDomain domain in _runtime.AppDomains)
            {
                ulong value = field.Read<ulong>(domain);
                if (value != 0) return value;
            }
            if (IsDump) throw new TargetException($"{Description}: {RegistryType}.{RegistryField} reads 0. Either the process never built a memory system, "
                + "or the dump does not hold static fields (createdump --normal or --triage); make the dump with createdump's default or --full");
            return 0;
        }
        if (!libraryLoaded) throw new TargetException($"{Description} does not use the Allocators library ({LibraryModule} is not loaded)");
        throw new TargetException($"{Description} loads {LibraryModule}, but its metadata cannot be read"
            + (IsDump ? " (createdump --normal or --triage dumps leave it out; make the dump with createdump's default or --full)" : ""));
    }

    /// <summary>Whether the module's metadata (read from the target) defines the registry type with its field; null when unreadable.</summary>
    private unsafe bool? DefinesRegistry(ClrModule module)
    {
        if (module.MetadataAddress == 0 || module.MetadataLength is <= 0 or > 256L << 20) return null;
        var bytes = new byte[module.MetadataLength];
        if (Read(module.MetadataAddress, bytes) != bytes.Length) return null;
        try
        {
            fixed (byte* p = bytes)
            {
                var metadata = new System.Reflection.Metadata.MetadataReader(p, bytes.Length);
                int dot = RegistryType.LastIndexOf('.');
                foreach (var handle in metadata.TypeDefinitions)
                {
                    var typeDef = metadata.GetTypeDefinition(handle);
                    if (!metadata.StringComparer.Equals(typeDef.Name, RegistryType[(dot + 1)..])
                        || !metadata.StringComparer.Equals(typeDef.Namespace, RegistryType[..dot])) continue;
                    foreach (var fieldHandle in typeDef.GetFields())
                    {
                        if (metadata.StringComparer.Equals(metadata.GetFieldDefinition(fieldHandle).Name, RegistryField)) return true;
                    }
                    return false;
                }
                return false;
            }
        }
        catch (BadImageFormatException)
        {
            return null;
        }
    }

    public int Read(ulong address, Span<byte> buffer) => _target.DataReader.Read(address, buffer);

    public void Dispose()
    {
        _runtime.Dispose();
        _target.Dispose();
    }
}
