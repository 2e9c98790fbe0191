#!/usr/bin/env python3
"""PyTorch figures beside qatml_cuda_bench, on the same GPU in the same run (build/gpu-check.sh runs both):

- torch._int_mm (s8 x s8 -> s32) TOPS at 8192^3 and M = 256, K = N = 8192 (B column-major, as cuBLASLt wants it);
- torch.matmul bf16 TFLOPS at 8192^3, for scale;
- ResNet18 in bf16, channels_last, eval, inference_mode, images/s at batch 1, 32, 256 on device-resident inputs
  (torchvision's model when torchvision is installed, else the same architecture built here), cudnn.benchmark on.

Output: one "key value" line per figure; comments start with '#'.
"""
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:  # the summary says the PyTorch side is missing
    print("# torch is not installed")
    sys.exit(0)


def cuda_ms(fn, iters):
    """Best of 5 rounds of `iters` calls, milliseconds per call (CUDA events)."""
    fn()
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best


def bench_int_mm(m, n, k):
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device="cuda")
    b = torch.randint(-128, 128, (n, k), dtype=torch.int8, device="cuda").t()  # [K, N], column-major
    ops = 2.0 * m * n * k
    iters = max(3, int(2e12 / ops))
    ms = cuda_ms(lambda: torch._int_mm(a, b), iters)
    print(f"torch_int_mm_{m}x{n}x{k}_tops {ops / (ms * 1e-3) / 1e12:.1f}")


def bench_bf16_mm(m, n, k):
    a = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(k, n, dtype=torch.bfloat16, device="cuda")
    ops = 2.0 * m * n * k
    ms = cuda_ms(lambda: a @ b, max(3, int(2e12 / ops)))
    print(f"torch_bf16_mm_{m}x{n}x{k}_tflops {ops / (ms * 1e-3) / 1e12:.1f}")


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


def resnet18():
    try:
        import torchvision
        print(f"# torchvision {torchvision.__version__}: models.resnet18")
        return torchvision.models.resnet18(weights=None)
    except ImportError:
        print("# torchvision missing: ResNet18 built by hand (the same layers)")
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def bench_resnet18():
    torch.backends.cudnn.benchmark = True
    model = resnet18().cuda().eval().to(memory_format=torch.channels_last).to(torch.bfloat16)
    for batch in (1, 32, 256):
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ms = cuda_ms(lambda: model(x), 200 if batch == 1 else (50 if batch == 32 else 10))
        print(f"torch_resnet18_bf16_cl_b{batch}_images_per_s {batch / (ms * 1e-3):.0f}")


def main():
    if not torch.cuda.is_available():
        print("# torch sees no CUDA GPU")
        return
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    what = sys.argv[1:] or ["gemm", "resnet"]
    if "gemm" in what:
        bench_int_mm(8192, 8192, 8192)
        bench_int_mm(256, 8192, 8192)
        bench_bf16_mm(8192, 8192, 8192)
    if "resnet" in what:
        bench_resnet18()


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"# torch benchmark took {time.time() - t0:.0f} s")
