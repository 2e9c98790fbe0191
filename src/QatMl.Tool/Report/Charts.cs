using System.Globalization;
using ScottPlot;

namespace QatMl.Tool.Report;

/// <summary>The report's charts, drawn by ScottPlot 5 as SVG (inline in the HTML; no fonts or scripts fetched).</summary>
internal static class Charts
{
    private static readonly Color Float = Color.FromHex("#7f8c8d");
    private static readonly Color Accent = Color.FromHex("#2e86de");
    private static readonly Color Warn = Color.FromHex("#e74c3c");
    private static readonly Color Good = Color.FromHex("#27ae60");

    /// <summary>SQNR per quantized activation, worst first (at most <paramref name="limit"/> bars).</summary>
    public static string Sqnr(IReadOnlyList<(string Tensor, double SqnrDb)> layers, int limit = 30)
    {
        var shown = layers.Take(limit).ToList();
        var plot = NewPlot();
        var bars = shown.Select((l, i) => new Bar
        {
            Position = shown.Count - 1 - i,
            Value = double.IsFinite(l.SqnrDb) ? l.SqnrDb : 99,
            FillColor = l.SqnrDb < 20 ? Warn : l.SqnrDb < 30 ? Color.FromHex("#f39c12") : Accent,
            Orientation = Orientation.Horizontal,
        }).ToList();
        plot.Add.Bars(bars);
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            shown.Select((_, i) => (double)(shown.Count - 1 - i)).ToArray(), shown.Select(l => Shorten(l.Tensor, 34)).ToArray());
        plot.Axes.Left.MajorTickStyle.Length = 0;
        plot.Title($"SQNR per quantized activation, worst {shown.Count} of {layers.Count} (dB, higher is better)");
        plot.XLabel("SQNR (dB)");
        plot.Axes.Margins(left: 0, right: 0.05, bottom: 0.02, top: 0.02);
        return Svg(plot, 900, Math.Max(220, 60 + shown.Count * 22));
    }

    /// <summary>The values one activation took, with the calibrated clipping range marked.</summary>
    public static string Histogram(TensorHistogram h)
    {
        var plot = NewPlot();
        var bars = new List<Bar>();
        for (int i = 0; i < h.Counts.Length; i++)
        {
            double center = (h.BinEdges[i] + h.BinEdges[i + 1]) / 2;
            bool clipped = center < h.ClipMin || center > h.ClipMax;
            bars.Add(new Bar
            {
                Position = center,
                Value = Math.Log10(1 + h.Counts[i]),
                Size = (h.BinEdges[i + 1] - h.BinEdges[i]) * 0.95,
                FillColor = clipped ? Warn : Accent,
                LineWidth = 0,
            });
        }
        plot.Add.Bars(bars);
        foreach (double x in new[] { h.ClipMin, h.ClipMax })
        {
            var line = plot.Add.VerticalLine(x, 2, Good, LinePattern.Dashed);
            if (x == h.ClipMin)
                line.LegendText = string.Create(CultureInfo.InvariantCulture, $"clipping range [{h.ClipMin:G4}, {h.ClipMax:G4}]");
        }
        plot.ShowLegend(Alignment.UpperRight);
        plot.Title(string.Create(CultureInfo.InvariantCulture, $"{Shorten(h.Tensor, 48)}  (SQNR {h.SqnrDb:F1} dB)"));
        plot.XLabel("value");
        plot.YLabel("log10(1 + count)");
        plot.Axes.Margins(bottom: 0);
        return Svg(plot, 440, 280);
    }

    /// <summary>Quality vs size of every trial, latency as marker size; the Pareto front (size, quality, latency) highlighted.</summary>
    public static string Trials(IReadOnlyList<TrialSummary> trials, double? floatQuality, double? budget, long floatBytes, string qualityName)
    {
        var plot = NewPlot();
        bool[] front = ParetoFront(trials);
        double maxLatency = trials.Max(t => t.MillisecondsPerRow);
        var frontPoints = trials.Where((_, i) => front[i]).OrderBy(t => t.Bytes).ToList();
        if (frontPoints.Count > 1)
        {
            var line = plot.Add.Scatter(frontPoints.Select(t => t.Bytes / 1024.0).ToArray(), frontPoints.Select(t => t.Quality * 100).ToArray(), Good);
            line.LineWidth = 2;
            line.MarkerSize = 0;
            line.LegendText = "Pareto front (size, quality, latency)";
        }
        for (int i = 0; i < trials.Count; i++)
        {
            var t = trials[i];
            double size = 8 + 22 * (maxLatency > 0 ? t.MillisecondsPerRow / maxLatency : 0);
            var marker = plot.Add.Marker(t.Bytes / 1024.0, t.Quality * 100, t.Chosen ? MarkerShape.FilledDiamond : MarkerShape.FilledCircle, (float)size,
                front[i] ? Good : Float);
            if (t.Chosen)
                marker.LegendText = "kept";
            var text = plot.Add.Text(string.Create(CultureInfo.InvariantCulture, $"{t.Name} ({t.MillisecondsPerRow:G3} ms/row)"), t.Bytes / 1024.0, t.Quality * 100);
            text.LabelFontSize = 11;
            text.LabelOffsetX = 10;
            text.LabelOffsetY = -14;
        }
        if (floatQuality is { } fq)
        {
            var f = plot.Add.Marker(floatBytes / 1024.0, fq * 100, MarkerShape.OpenSquare, 12, Float);
            f.LegendText = "float model";
            if (budget is { } b)
            {
                var bl = plot.Add.HorizontalLine(fq * 100 - b, 1.5f, Warn, LinePattern.Dotted);
                bl.LegendText = string.Create(CultureInfo.InvariantCulture, $"budget ({b:G3} points)");
            }
        }
        plot.Title($"Trials: {qualityName} vs size (marker size: latency)");
        plot.XLabel("model size (KiB)");
        plot.YLabel($"{qualityName} (%)");
        plot.ShowLegend(Alignment.LowerRight);
        plot.Axes.Margins(0.15, 0.2);
        return Svg(plot, 900, 420);
    }

    /// <summary>Quantized minus float confusion counts (rows: true class, columns: predicted).</summary>
    public static string ConfusionDifference(ConfusionPair pair)
    {
        int n = pair.Classes.Count;
        var diff = new double[n, n];
        double max = 1;
        for (int r = 0; r < n; r++)
            for (int c = 0; c < n; c++)
            {
                diff[r, c] = pair.Quantized[r, c] - pair.Float[r, c];
                max = Math.Max(max, Math.Abs(diff[r, c]));
            }
        var plot = NewPlot();
        var colormap = new ScottPlot.Colormaps.Balance();
        for (int r = 0; r < n; r++)
            for (int c = 0; c < n; c++)
            {
                // Row r at the top: y = n - 1 - r. Vector rectangles stay sharp at any zoom (a heatmap is a scaled bitmap).
                double y = n - 1 - r;
                var cell = plot.Add.Rectangle(c - 0.5, c + 0.5, y - 0.5, y + 0.5);
                cell.FillStyle.Color = diff[r, c] == 0 ? Color.FromHex("#f7f9fa") : colormap.GetColor(0.5 + 0.35 * diff[r, c] / max);
                cell.LineStyle.Color = Color.FromHex("#dde3e8");
                cell.LineStyle.Width = 1;
                if (diff[r, c] != 0 && n <= 20)
                {
                    var text = plot.Add.Text(diff[r, c].ToString("+0;-0", CultureInfo.InvariantCulture), c, y);
                    text.LabelFontSize = 12;
                    text.LabelBold = true;
                    text.LabelAlignment = Alignment.MiddleCenter;
                }
            }
        double[] positions = Enumerable.Range(0, n).Select(i => (double)i).ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(positions, pair.Classes.Select(c => Shorten(c, 10)).ToArray());
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(positions.Select(p => n - 1 - p).ToArray(), pair.Classes.Select(c => Shorten(c, 10)).ToArray());
        plot.Title("Confusion matrix: quantized minus float (rows: true class)");
        plot.Axes.SetLimits(-0.5, n - 0.5, -0.5, n - 0.5);
        plot.XLabel("predicted class");
        plot.YLabel("true class");
        return Svg(plot, 620, 520);
    }

    /// <summary>Trials no other trial beats on size, quality and latency at once.</summary>
    internal static bool[] ParetoFront(IReadOnlyList<TrialSummary> trials)
    {
        var front = new bool[trials.Count];
        for (int i = 0; i < trials.Count; i++)
        {
            var a = trials[i];
            front[i] = !trials.Where((_, j) => j != i).Any(b =>
                b.Bytes <= a.Bytes && b.Quality >= a.Quality && b.MillisecondsPerRow <= a.MillisecondsPerRow
                && (b.Bytes < a.Bytes || b.Quality > a.Quality || b.MillisecondsPerRow < a.MillisecondsPerRow));
        }
        return front;
    }

    private static Plot NewPlot()
    {
        var plot = new Plot();
        plot.Font.Set("DejaVu Sans");
        plot.Axes.Title.Label.FontSize = 15;
        return plot;
    }

    private static string Svg(Plot plot, int width, int height)
    {
        string svg = plot.GetSvgXml(width, height);
        // Inline in HTML: no XML declaration.
        int start = svg.IndexOf("<svg", StringComparison.Ordinal);
        return start > 0 ? svg[start..] : svg;
    }

    private static string Shorten(string text, int max) => text.Length <= max ? text : "…" + text[^(max - 1)..];
}
