// Published app that gets QatMl through a class library: the native engine, libtorch (patched on Debian 12 by the
// package's buildTransitive targets) and ONNX Runtime must all load from the publish folder.
using QatMlConsumer.Lib;

Console.WriteLine($"  qatml_native {Runtimes.NativeLibraryVersion()}, torch.ones(3).sum() = {Runtimes.TorchSum()}, ONNX Runtime providers: {Runtimes.OnnxRuntimeProviders()}");
if (Runtimes.TorchSum() != 3f)
    return 1;
Console.WriteLine("PASS transitive-publish");
return 0;
