using System.Globalization;
using System.Reflection;
using Spectre.Console.Cli;

namespace Allocators.Cli;

/// <summary>An option a command does not have, with the ones it does have.</summary>
internal sealed record UnknownOption(string Command, string Option, IReadOnlyList<string> ValidOptions)
{
    /// <summary>The one-line usage error, e.g. <c>stress: unknown option '--thread'; valid options: ...</c>.</summary>
    public string Message => $"{Command}: unknown option '{Option}'; valid options: {string.Join(", ", ValidOptions)}";
}

/// <summary>
/// The options of every command, read from its settings type. Spectre's strict parsing refuses an unknown option but
/// names neither the command nor the options it takes, so the usage error looks them up here.
/// </summary>
internal sealed class OptionCatalog
{
    // Spectre adds help to every command; it is in no settings type.
    private const string Help = "-h|--help";

    private readonly Dictionary<string, Type> _settings = new(StringComparer.Ordinal);
    private string? _default;

    /// <summary>
    /// Adds <typeparamref name="TCommand"/> to <paramref name="config"/> as <paramref name="name"/> and records its options;
    /// <paramref name="isDefault"/> marks the command that runs when the first argument names none.
    /// </summary>
    public ICommandConfigurator AddCommand<TCommand>(IConfigurator config, string name, bool isDefault = false)
        where TCommand : class, ICommand
    {
        Type settings = typeof(TCommand).GetInterfaces()
            .Single(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(ICommand<>))
            .GetGenericArguments()[0];
        _settings.Add(name, settings);
        if (isDefault) _default = name;
        return config.AddCommand<TCommand>(name);
    }

    /// <summary>The first option in <paramref name="args"/> that its command does not have; null when there is none.</summary>
    public UnknownOption? FindUnknown(IReadOnlyList<string> args)
    {
        int first = 1;
        string? command = args.Count > 0 && _settings.ContainsKey(args[0]) ? args[0] : null;
        if (command is null)
        {
            // Options before any command belong to the default command; a first word that is no command is another error.
            if (args.Count > 0 && !args[0].StartsWith('-')) return null;
            command = _default;
            first = 0;
        }
        if (command is null) return null;
        var options = Describe(_settings[command]);
        var longNames = options.SelectMany(o => o.LongNames).Append("help").ToHashSet(StringComparer.Ordinal);
        var shortNames = options.SelectMany(o => o.ShortNames).Append("h").ToHashSet(StringComparer.Ordinal);
        for (int i = first; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg == "--") break;
            if (!arg.StartsWith('-') || arg.Length == 1) continue;
            // A negative number is the value of the option before it.
            if (double.TryParse(arg, NumberStyles.Float, CultureInfo.InvariantCulture, out _)) continue;
            // --name=value and --name:value carry their value in the same argument.
            int end = arg.IndexOfAny(['=', ':']);
            string token = end < 0 ? arg : arg[..end];
            bool known = token.StartsWith("--", StringComparison.Ordinal)
                ? longNames.Contains(token[2..])
                : token[1..].All(c => shortNames.Contains(c.ToString())); // -ab is -a -b
            if (!known) return new UnknownOption(command, token, [Help, .. options.Select(o => o.Usage)]);
        }
        return null;
    }

    private sealed record OptionInfo(IReadOnlyList<string> LongNames, IReadOnlyList<string> ShortNames, string Usage);

    /// <summary>The visible options of a settings type, base class first, as help lists them.</summary>
    private static List<OptionInfo> Describe(Type settings)
    {
        var hierarchy = new Stack<Type>();
        for (Type? t = settings; t is not null && t != typeof(CommandSettings); t = t.BaseType) hierarchy.Push(t);
        var options = new List<OptionInfo>();
        foreach (Type type in hierarchy)
        {
            foreach (PropertyInfo property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            {
                if (property.GetCustomAttribute<CommandOptionAttribute>() is not { IsHidden: false } option) continue;
                string names = string.Join('|', option.ShortNames.Select(n => "-" + n).Concat(option.LongNames.Select(n => "--" + n)));
                string value = option.ValueName is null ? "" : option.ValueIsOptional ? $" [{option.ValueName}]" : $" <{option.ValueName}>";
                options.Add(new OptionInfo([.. option.LongNames], [.. option.ShortNames], names + value));
            }
        }
        return options;
    }
}
