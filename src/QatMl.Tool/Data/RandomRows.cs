namespace QatMl.Tool.Data;

/// <summary>
/// Stand-in inputs when no data is given (inspect's quick look, benchmark timings): standard normal values, what a
/// normalised image or feature vector looks like. Fine for speed and graph structure; never for accuracy.
/// </summary>
internal static class RandomRows
{
    public static ModelRows Create(ModelInfo model, int[]? inputShape, int count, int seed = 0)
    {
        long elements = model.RowShape(inputShape).Aggregate(1L, (a, b) => a * b);
        if (elements > 64L << 20)
            throw new ToolException($"Model input '{model.Input.Name}' has {elements:N0} values per row; too many for random stand-in rows.");
        var random = new Random(seed);
        var rows = new List<float[]>(count);
        for (int r = 0; r < count; r++)
        {
            var row = new float[elements];
            for (int i = 0; i < row.Length; i++)
                row[i] = (float)random.NextGaussian();
            rows.Add(row);
        }
        return new ModelRows(model.Input.Name, rows, null);
    }

    private static double NextGaussian(this Random random)
    {
        double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
