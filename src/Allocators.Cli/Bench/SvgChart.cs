using System.Globalization;
using System.Text;
using Allocators.Workloads;

namespace Allocators.Cli.Bench;

/// <summary>
/// A chart written as SVG text: lines with markers or bars over a y axis from 0, numbered ticks, a title and a legend
/// on the right. Plain text needs no rendering library, so the tool carries no native graphics binaries, and markdown
/// viewers show SVG as they show PNG.
/// </summary>
internal sealed class SvgChart(int width, int height)
{
    // Tableau's Category10, the usual order of series colours.
    private static readonly string[] Palette =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

    private const int Left = 80, Top = 44, Bottom = 56, LegendWidth = 210;
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private readonly StringBuilder _marks = new();
    private readonly List<(string Label, string Color, bool Line)> _legend = [];

    /// <summary>The i-th colour of the palette (it repeats after ten).</summary>
    public static string Color(int i) => Palette[i % Palette.Length];

    public string Title { get; init; } = "";

    public string XLabel { get; init; } = "";

    public string YLabel { get; init; } = "";

    /// <summary>The x range shown.</summary>
    public required (double Min, double Max) X { get; init; }

    /// <summary>The top of the y axis (its bottom is 0).</summary>
    public required double YMax { get; init; }

    /// <summary>Where the x axis has a tick and what it says there.</summary>
    public IReadOnlyList<(double Position, string Label)> XTicks { get; init; } = [];

    private double PlotWidth => width - Left - LegendWidth;

    private double PlotHeight => height - Top - Bottom;

    private double Px(double x) => Left + (x - X.Min) / (X.Max - X.Min) * PlotWidth;

    private double Py(double y) => Top + PlotHeight - Math.Clamp(y / YMax, 0, 1) * PlotHeight;

    /// <summary>A line through the points, with a marker on each, and a legend entry.</summary>
    public void AddLine(string label, string color, IReadOnlyList<(double X, double Y)> points, double strokeWidth)
    {
        _legend.Add((label, color, true));
        string path = string.Join(' ', points.Select(p => F($"{Px(p.X):0.#},{Py(p.Y):0.#}")));
        _marks.Append(F($"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{strokeWidth:0.#}\" points=\"{path}\"/>\n"));
        foreach (var p in points) _marks.Append(F($"<circle cx=\"{Px(p.X):0.#}\" cy=\"{Py(p.Y):0.#}\" r=\"3.5\" fill=\"{color}\"/>\n"));
    }

    /// <summary>A bar from 0 to <paramref name="value"/> centred on <paramref name="x"/>.</summary>
    public void AddBar(double x, double barWidth, double value, string color)
    {
        double x0 = Px(x - barWidth / 2), x1 = Px(x + barWidth / 2), y = Py(Math.Max(0, value));
        _marks.Append(F($"<rect x=\"{x0:0.#}\" y=\"{y:0.#}\" width=\"{x1 - x0:0.##}\" height=\"{Py(0) - y:0.#}\" fill=\"{color}\"/>\n"));
    }

    /// <summary>A legend entry drawn as a filled square (for bars).</summary>
    public void AddLegend(string label, string color) => _legend.Add((label, color, false));

    /// <summary>The whole SVG document.</summary>
    public string Render()
    {
        var sb = new StringBuilder();
        sb.Append(F($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n"));
        sb.Append(F($"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"));
        sb.Append(F($"<text x=\"{Left + PlotWidth / 2:0.#}\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{Escape(Title)}</text>\n"));
        double bottom = Top + PlotHeight;
        foreach (double y in NiceTicks(YMax))
        {
            double py = Py(y);
            sb.Append(F($"<line x1=\"{Left}\" x2=\"{Left + PlotWidth:0.#}\" y1=\"{py:0.#}\" y2=\"{py:0.#}\" stroke=\"#e5e5e5\"/>\n"));
            sb.Append(F($"<text x=\"{Left - 6}\" y=\"{py + 4:0.#}\" text-anchor=\"end\">{y.ToString("G6", Inv)}</text>\n"));
        }
        foreach (var (position, label) in XTicks)
        {
            double px = Px(position);
            sb.Append(F($"<line x1=\"{px:0.#}\" x2=\"{px:0.#}\" y1=\"{bottom:0.#}\" y2=\"{bottom + 5:0.#}\" stroke=\"black\"/>\n"));
            sb.Append(F($"<text x=\"{px:0.#}\" y=\"{bottom + 19:0.#}\" text-anchor=\"middle\">{Escape(label)}</text>\n"));
        }
        sb.Append(_marks);
        sb.Append(F($"<rect x=\"{Left}\" y=\"{Top}\" width=\"{PlotWidth:0.#}\" height=\"{PlotHeight:0.#}\" fill=\"none\" stroke=\"black\"/>\n"));
        sb.Append(F($"<text x=\"{Left + PlotWidth / 2:0.#}\" y=\"{height - 12}\" text-anchor=\"middle\">{Escape(XLabel)}</text>\n"));
        sb.Append(F($"<text transform=\"translate(20 {Top + PlotHeight / 2:0.#}) rotate(-90)\" text-anchor=\"middle\">{Escape(YLabel)}</text>\n"));
        double legendX = Left + PlotWidth + 16;
        for (int i = 0; i < _legend.Count; i++)
        {
            var (label, color, line) = _legend[i];
            double y = Top + 10 + i * 20;
            sb.Append(line
                ? F($"<line x1=\"{legendX:0.#}\" x2=\"{legendX + 22:0.#}\" y1=\"{y:0.#}\" y2=\"{y:0.#}\" stroke=\"{color}\" stroke-width=\"3\"/>\n")
                : F($"<rect x=\"{legendX + 5:0.#}\" y=\"{y - 6:0.#}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\n"));
            sb.Append(F($"<text x=\"{legendX + 30:0.#}\" y=\"{y + 4:0.#}\">{Escape(label)}</text>\n"));
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    /// <summary>Ticks at 0 and every multiple of 1, 2 or 5 x 10^k up to <paramref name="max"/>, about five of them.</summary>
    internal static IReadOnlyList<double> NiceTicks(double max)
    {
        if (!(max > 0) || double.IsInfinity(max)) return [0];
        double raw = max / 5;
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1, 2, 5, 10 }.Select(m => m * magnitude).First(s => s >= raw);
        var ticks = new List<double>();
        for (int i = 0; i * step <= max * (1 + 1e-9); i++) ticks.Add(Math.Round(i * step, 12));
        return ticks;
    }

    private static string F(FormattableString s) => s.ToString(Inv);

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;");
}
