"""Timing and memory of the benchmarks (``bench_attention.py``, ``bench_model.py``): medians on a chosen clock,
CUDA-synchronised, and the peak extra memory of one call (CUDA's allocator, or the resident set on CPU)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import statistics
import threading
import time

import torch

CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def use_clock(name: str) -> None:
    """Time with ``CLOCK[name]`` from now on: ``wall``, or ``cpu`` (the process's CPU time, all its threads)."""
    global clock
    clock = CLOCK[name]


def timed(fn, device, repeats: int, warmup: bool = False) -> float:
    """Median time of ``fn()`` in ms (CUDA-synchronised) on :data:`clock`, after one untimed call with ``warmup``."""
    if warmup:
        fn()  # plans, caches, allocator
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((clock() - start) * 1e3)
    return statistics.median(times)


class PeakRSS:
    """Resident-set growth during a block, sampled by a thread (CPU has no allocator statistics).

    Allocations above 64 KiB are served by mmap meanwhile (glibc ``mallopt``), so freed tensors
    leave the resident set instead of staying in malloc's arenas.
    """

    M_MMAP_THRESHOLD = -3

    def __enter__(self):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self.libc.mallopt(self.M_MMAP_THRESHOLD, 64 * 1024)
        self.libc.malloc_trim(0)
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.0002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.extra = self.peak - self.base
        self.libc.mallopt(self.M_MMAP_THRESHOLD, 128 * 1024)  # glibc's default


def peak_memory(step, device) -> float:
    """Extra memory (MiB) of one ``step()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with PeakRSS() as peak:
        step()
    return peak.extra / 2**20
