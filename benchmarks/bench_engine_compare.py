"""Seconds per call of the six paper methods, LRP-beta_1 and a gradient on ResNet-50 (random
weights, float32, batch 2, 224 px, 2 threads; one warm-up, median and best of 5), for a
side-by-side comparison of two engines in one session: run it alternately with
``PYTHONPATH=<checkout>`` pointing at each (the printed JSON names the engine used), e.g.

    for i in 1 2 3; do PYTHONPATH=../base .venv/bin/python benchmarks/bench_engine_compare.py;
                       PYTHONPATH=. .venv/bin/python benchmarks/bench_engine_compare.py; done
"""
import json
import statistics
import time

import torch
import torchvision

import empirical
from empirical.engine import PAPER_METHODS, Explainer


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ex = Explainer(torchvision.models.resnet50())
    x = torch.randn(2, 3, 224, 224)
    out = {"engine": empirical.__file__}
    for name, methods in (("six_paper_methods", list(PAPER_METHODS)), ("lrp_beta_1", ["lrp_beta_1"]),
                          ("gradient", ["gradient"])):
        ex.attribute(x, methods)
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            ex.attribute(x, methods)
            ts.append(time.perf_counter() - t)
        out[name] = {"median": statistics.median(ts), "best": min(ts)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
