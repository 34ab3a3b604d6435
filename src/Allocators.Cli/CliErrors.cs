using Allocators.Cli.Inspection;
using Allocators.Cli.Output;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Allocators.Cli;

/// <summary>Turns exceptions into messages and the documented exit codes.</summary>
internal static class CliErrors
{
    public static int Handle(Exception exception, string[] args, OptionCatalog commands)
    {
        int code = exception switch
        {
            CommandParseException or CommandRuntimeException => ExitCodes.UsageError,
            TargetException => ExitCodes.TargetError,
            _ => ExitCodes.InternalError,
        };
        UnknownOption? unknown = exception is CommandParseException ? commands.FindUnknown(args) : null;
        // Errors other than internal ones are one line each, whatever the messages of the libraries underneath hold.
        string message = code == ExitCodes.InternalError ? exception.ToString() : (unknown?.Message ?? exception.Message).ReplaceLineEndings(" ");
        if (args.Contains("--json") && code != ExitCodes.UsageError)
        {
            JsonOutput.Write(new ErrorReport(exception.Message, code), CliJsonContext.Default.ErrorReport);
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        // Redirected, nothing would read wrapped lines as one message: no wrapping.
        if (Console.IsErrorRedirected) console.Profile.Width = int.MaxValue;
        string prefix = code switch
        {
            ExitCodes.UsageError => "usage error",
            ExitCodes.TargetError => "target error",
            _ => "internal error",
        };
        console.MarkupLineInterpolated($"[red]{prefix}:[/] {message}");
        if (unknown is not null) console.WriteLine($"Run 'allocators {unknown.Command} --help' for usage.");
        else if (code == ExitCodes.UsageError) console.WriteLine("Run 'allocators --help' or 'allocators <command> --help' for usage.");
        return code;
    }
}
