namespace Microsoft.ML.Quantization;

/// <summary>
/// An ONNX model could not be read, written or transformed: the message names the file (when known),
/// the node or tensor and the problem.
/// </summary>
public sealed class InvalidOnnxModelException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public InvalidOnnxModelException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and the error that caused it.</summary>
    public InvalidOnnxModelException(string message, Exception innerException) : base(message, innerException) { }
}
