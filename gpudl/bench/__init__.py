"""CPU-vs-GPU timing harness, device info (NVML), reports and plots."""

from gpudl.bench.device_info import machine_info
from gpudl.bench.timing import summarize, time_fn
from gpudl.bench.train_step import bench_model, format_table

__all__ = ["bench_model", "format_table", "machine_info", "summarize", "time_fn"]
