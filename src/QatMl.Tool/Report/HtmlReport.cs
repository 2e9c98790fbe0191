using System.Globalization;
using System.Xml.Linq;
using static QatMl.Tool.Cli.Invariant;


namespace QatMl.Tool.Report;

/// <summary>
/// Writes report.html: one self-contained file (inline CSS and SVG, no script, nothing fetched). Built as XML, so it
/// is well-formed (tests parse it) and every non-void element has an end tag, as HTML needs.
/// </summary>
internal static class HtmlReport
{
    private const string Style = """
        body { font-family: 'DejaVu Sans', 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0; background: #f4f6f8; color: #22303c; }
        header { background: #22303c; color: #fff; padding: 18px 32px; }
        header h1 { margin: 0; font-size: 22px; font-weight: 600; }
        header p { margin: 4px 0 0; color: #b8c4ce; font-size: 13px; }
        main { padding: 16px 32px 40px; max-width: 1180px; }
        section { background: #fff; border-radius: 8px; padding: 14px 20px; margin: 14px 0; box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
        h2 { font-size: 17px; margin: 2px 0 10px; }
        .cards { display: flex; flex-wrap: wrap; gap: 12px; }
        .card { flex: 1 1 0; min-width: 150px; border: 1px solid #e1e6ea; border-radius: 6px; padding: 10px 14px; }
        .card .label { font-size: 12px; color: #6b7b88; text-transform: uppercase; letter-spacing: 0.04em; }
        .card .value { font-size: 19px; font-weight: 600; margin-top: 2px; }
        .card .detail { font-size: 12px; color: #6b7b88; margin-top: 2px; }
        .ok { color: #1e8449; } .bad { color: #c0392b; }
        table { border-collapse: collapse; font-size: 13px; width: 100%; }
        th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e8ecef; }
        th { color: #6b7b88; font-weight: 600; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        tr.chosen td { background: #eaf4fc; font-weight: 600; }
        .grid { display: flex; flex-wrap: wrap; gap: 8px; }
        figure { margin: 6px 0; }
        figure svg { max-width: 100%; height: auto; }
        .note { font-size: 13px; color: #52616d; }
        code { font-size: 12px; background: #f0f3f5; padding: 1px 4px; border-radius: 3px; }
        """;

    public static string Render(ReportModel m)
    {
        var chosen = m.Chosen;
        string qualityName = m.MetricName;
        var body = new XElement("body",
            new XElement("header",
                new XElement("h1", $"QatMl report: {m.ModelName}"),
                new XElement("p", $"{m.Created:yyyy-MM-dd HH:mm} · qatml {m.ToolVersion} · {m.Cpu} · {m.CalibrationRows} calibration and {m.EvaluationRows} evaluation rows")),
            new XElement("main",
                Section("summary", "Summary", Summary(m, chosen, qualityName)),
                Section("trials", "Trials", TrialsTable(m, qualityName), Figure("chart-trials", Charts.Trials(m.Trials, m.MetricName == "accuracy" ? m.FloatAccuracy : 1.0, m.Budget, m.FloatBytes, qualityName)),
                    P("note", "Each point is one quantized model; the marker grows with its latency. A trial is on the Pareto front when no other trial is at once smaller, better and faster. "
                        + "With --precision auto these are the trials of mlContext.Quantization.Auto (docs/auto.md), each scored on the evaluation rows by the search itself; "
                        + "only the kept one is also compared in full (agreement, cosine, SQNR, latency per backend).")),
                Section("layers", "Per-layer SQNR", m.Layers.Count == 0
                    ? P("note", "No quantized activation to compare.")
                    : Figure("chart-sqnr", Charts.Sqnr(m.Layers)),
                    P("note", "Signal-to-quantization-noise ratio of each quantized activation against the float model on the evaluation rows (below 20 dB in red).")),
                Section("histograms", "Activation histograms of the worst tensors",
                    m.Histograms.Count == 0 ? P("note", "No histogram (no quantized activation).") : new XElement("div", new XAttribute("id", "chart-histograms"), new XAttribute("class", "grid"),
                        m.Histograms.Select(h => Figure(null, Charts.Histogram(h), "histogram"))),
                    P("note", "Values the float model produced on the calibration rows; dashed lines: the clipping range calibration chose (values outside it, in red, saturate).")),
                Section("confusion", "Confusion matrix difference",
                    m.Confusion is { } pair ? Figure("chart-confusion", Charts.ConfusionDifference(pair))
                        : P("note", (m.LabelNote ?? "no labels") + ": no confusion matrix. Give an image folder with one subfolder per class, or --labels, whose classes index the model's output.")),
                Section("float-nodes", "What stays float", FloatNodes(m)),
                Section("data", "Data and settings", Settings(m)),
                Section("files", "Files", new XElement("table", Row("th", "file", "what"), m.Files.Select(f => new XElement("tr", Cell(new XElement("code", f.File)), Cell(f.What)))))));
        var html = new XElement("html", new XAttribute("lang", "en"),
            new XElement("head",
                new XElement("meta", new XAttribute("charset", "utf-8")),
                new XElement("meta", new XAttribute("name", "viewport"), new XAttribute("content", "width=device-width, initial-scale=1")),
                new XElement("title", $"QatMl report: {m.ModelName}"),
                new XElement("style", Style)),
            body);
        return "<!DOCTYPE html>\n" + html.ToString(SaveOptions.DisableFormatting) + "\n";
    }

    private static object[] Summary(ReportModel m, TrialSummary chosen, string qualityName)
    {
        string quality = m.MetricName == "accuracy" && m.FloatAccuracy is { } fa
            ? F($"{Pct(fa)} → {Pct(chosen.Quality)}")
            : F($"{Pct(chosen.Quality)}");
        string qualityDetail = m.MetricName switch
        {
            "accuracy" => F($"drop {chosen.Loss:F2} points"),
            "top-1 agreement" => "rows whose argmax matches the float model's",
            _ => "mean cosine of the outputs with the float model's",
        };
        string budget = m.Budget is { } b ? (chosen.WithinBudget == true ? "met" : "missed") : "none";
        var cards = new XElement("div", new XAttribute("class", "cards"),
            Card("kept", chosen.Name, $"{chosen.Precision}, {chosen.Calibration}" + (chosen.FloatNodeCount > 0 ? F($", {chosen.FloatNodeCount} float node(s)") : "")),
            Card(qualityName, quality, qualityDetail),
            Card("agreement with float", F($"{Pct(chosen.Agreement)}"), F($"top-1; output cosine {chosen.Cosine:F4}, SQNR {chosen.OutputSqnrDb:F1} dB")),
            Card("size", F($"{m.FloatBytes / 1024.0:N0} → {chosen.Bytes / 1024.0:N0} KiB"), F($"{(double)chosen.Bytes / m.FloatBytes:P1} of float")),
            Card("budget", budget, m.Budget is { } bb ? F($"{bb:G3} points of {qualityName}; lost {chosen.Loss:F2}") : "no --budget given",
                m.Budget is null ? null : chosen.WithinBudget == true ? "ok" : "bad"));
        var latency = new XElement("table", Row("th", "backend", "ms / row", "rows / s", "rows timed", "note"),
            m.Latencies.Select(l => new XElement("tr", Cell(l.Backend), Num(l.MillisecondsPerRow is { } ms ? F($"{ms:G4}") : "–"),
                Num(l.RowsPerSecond is { } r ? F($"{r:N0}") : "–"), Num(l.Rows.ToString(CultureInfo.InvariantCulture)), Cell(l.Note ?? ""))));
        return [cards, new XElement("h2", new XAttribute("style", "margin-top:14px"), "Latency per backend"), latency,
            P("note", $"Best of up to three passes over the rows, batch and threads as given; measured while the tool ran, so read ratios, not absolutes. {m.BackendNote}")];
    }

    private static XElement TrialsTable(ReportModel m, string qualityName)
        => new("table", Row("th", "trial", "why", qualityName, "lost (points)", "cosine", "SQNR (dB)", "size (KiB)", "ms / row", "budget"),
            m.Trials.Select(t => new XElement("tr", t.Chosen ? new XAttribute("class", "chosen") : null,
                Cell(t.Name), Cell(t.Why), Num(F($"{Pct(t.Quality)}")), Num(F($"{t.Loss:F2}")), Num(Measured(t.Cosine, "F4")), Num(Measured(t.OutputSqnrDb, "F1")),
                Num(F($"{t.Bytes / 1024.0:N0}")), Num(F($"{t.MillisecondsPerRow:G4}")),
                Cell(t.WithinBudget is { } ok ? ok ? "within" : "over" : "–"))));

    private static object FloatNodes(ReportModel m)
        => m.FloatNodes.Count == 0
            ? P("note", $"All {m.QuantizedNodeCount} nodes are quantized.")
            : new XElement("div", P("note", $"{m.QuantizedNodeCount} nodes quantized, {m.FloatNodes.Count} stay float:"),
                new XElement("table", Row("th", "node", "op", "why"), m.FloatNodes.Select(n => new XElement("tr", Cell(n.Name), Cell(n.OpType), Cell(n.Reason)))));

    private static XElement Settings(ReportModel m)
        => new("table",
            Pair("model", $"{m.ModelPath} ({m.FloatBytes:N0} bytes)"),
            Pair("data", m.DataDescription),
            Pair("preprocessing", m.Preprocessing),
            Pair("rows", $"{m.CalibrationRows} for calibration, {m.EvaluationRows} for evaluation"),
            Pair("labels", m.HasLabels ? "yes: accuracy is measured" : m.LabelNote ?? "no labels"),
            Pair("budget", m.Budget is { } b ? F($"{b:G3} points of {m.MetricName}") : "none"),
            Pair("backend", m.RequestedBackend == m.Backend ? m.Backend : $"{m.Backend} (asked for {m.RequestedBackend})"),
            Pair("strategy", m.Strategy),
            Pair("kept because", m.ChoiceReason));

    /// <summary>A value, or a dash where the trial did not measure it (the auto search scores one metric per trial).</summary>
    private static string Measured(double value, string format) => double.IsNaN(value) ? "–" : value.ToString(format, CultureInfo.InvariantCulture);

    private static string Pct(double fraction) => (fraction * 100).ToString("0.00", CultureInfo.InvariantCulture) + "%";

    private static XElement Section(string id, string title, params object?[] content)
        => new("section", new XAttribute("id", id), new XElement("h2", title), content);

    private static XElement Figure(string? id, string svg, string? cssClass = null)
        => new("figure", id is null ? null : new XAttribute("id", id), cssClass is null ? null : new XAttribute("class", cssClass), XElement.Parse(svg));

    private static XElement Card(string label, string value, string detail, string? valueClass = null)
        => new("div", new XAttribute("class", "card"),
            new XElement("div", new XAttribute("class", "label"), label),
            new XElement("div", new XAttribute("class", "value" + (valueClass is null ? "" : " " + valueClass)), value),
            new XElement("div", new XAttribute("class", "detail"), detail + ""));

    private static XElement P(string cssClass, string text) => new("p", new XAttribute("class", cssClass), text + "");

    private static XElement Row(string cell, params string[] values) => new("tr", values.Select(v => new XElement(cell, v + "")));

    private static XElement Pair(string name, string value) => new("tr", new XElement("th", name), Cell(value));

    private static XElement Cell(object content) => new("td", content is string s ? s + "" : content);

    private static XElement Num(string value) => new("td", new XAttribute("class", "num"), value + "");
}
