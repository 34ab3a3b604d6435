using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Allocators.Cli.Bench;
using Allocators.Cli.Commands;
using Allocators.Cli.Inspection;
using Allocators.Cli.Workloads;

namespace Allocators.Cli.Output;

/// <summary>Source-generated System.Text.Json metadata for every document the CLI prints with <c>--json</c>.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(InspectReport))]
[JsonSerializable(typeof(StatReport))]
[JsonSerializable(typeof(StressReport))]
[JsonSerializable(typeof(DemoReport))]
[JsonSerializable(typeof(SelftestReport))]
[JsonSerializable(typeof(ErrorReport))]
[JsonSerializable(typeof(TraceJsonReport))]
internal sealed partial class CliJsonContext : JsonSerializerContext;

/// <summary>What a failed command prints with <c>--json</c>.</summary>
internal sealed record ErrorReport(string Error, int ExitCode);

/// <summary>Writes JSON documents to standard output.</summary>
internal static class JsonOutput
{
    // Text such as "<active_objs>" stays readable: nothing here is embedded in HTML.
    private static readonly JsonSerializerOptions Indented = new(CliJsonContext.Default.Options) { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly JsonSerializerOptions OneLine = new(Indented) { WriteIndented = false };

    public static void Write<T>(T value, JsonTypeInfo<T> type)
    {
        Console.Out.Write(Serialize(value, type, Indented));
        Console.Out.Write('\n');
        Console.Out.Flush();
    }

    /// <summary>A compact single-line form (for line-oriented protocols such as the self-test target).</summary>
    public static string Compact<T>(T value, JsonTypeInfo<T> type) => Serialize(value, type, OneLine);

    private static string Serialize<T>(T value, JsonTypeInfo<T> type, JsonSerializerOptions options)
        => JsonSerializer.Serialize(value, (JsonTypeInfo<T>)options.GetTypeInfo(type.Type));
}

/// <summary>Settings shared by every command that can print JSON.</summary>
internal class JsonSettings : Spectre.Console.Cli.CommandSettings
{
    [Spectre.Console.Cli.CommandOption("--json")]
    [System.ComponentModel.Description("Print one JSON document on standard output instead of human-readable text.")]
    public bool Json { get; init; }
}
