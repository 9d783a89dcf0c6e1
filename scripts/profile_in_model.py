"""Which kernels a compiled training step of ResNet-18 with fp8 quantizers after every convolution
runs, and how long the quantizers' take (device time, torch.profiler)."""

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import lowbit
from lowbit.models import get_model

torch.manual_seed(0)
m = lowbit.nn.lower(get_model("resnet18").cuda(), nn.Conv2d, forward="fp8", backward="fp8")
cm = torch.compile(m)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(512, 3, 32, 32, device="cuda"), torch.randint(0, 10, (512,), device="cuda")


def step():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(cm(x), y).backward()
    opt.step()


for _ in range(3):
    step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    step()
    torch.cuda.synchronize()
events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
total = sum(e.self_device_time_total for e in events)
quant = [e for e in events if "quant" in e.key.lower() or "cast" in e.key.lower()]
print(f"device time of the step: {total / 1e3:.2f} ms; quantize kernels: {sum(e.count for e in quant)} launches, "
      f"{sum(e.self_device_time_total for e in quant) / 1e3:.3f} ms")
for e in sorted(events, key=lambda e: -e.self_device_time_total)[:12]:
    print(f"{e.self_device_time_total / 1e3:8.3f} ms {e.count:4d}  {e.key[:90]}")
