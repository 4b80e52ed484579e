"""Throughput of ``fit-patterns`` in one process and on a local Ray instance, Ray's overhead, and a projection
of the half-ImageNet VGG-16 fit on a GPU node and on 4 nodes.

On N (default 2,000) real digits (scikit-learn's bundled set, upsampled to 32x32 PNG files) and the
bundled ``models/digits_cnn.onnx``, with the same batches everywhere (the results are checked equal):

* images/s of ``fit_statistics`` in this process (decode + statistics graph), then with ``engine="ray"``
  and 1 and 2 workers on a local Ray instance started here with ``--cpus`` CPUs (its start-up is timed
  apart; each fit includes starting the workers, which canonicalise the model);
* Ray's overhead: the round trip of a no-op call to a worker actor, the cost of one more shard (one more
  call + one more result of sums: the same data fitted in 1-batch shards vs in one shard per worker), and
  (Ray with 1 worker − one process) / batches;
* ``evaluate`` of two methods with four metrics on ``--eval-images`` of the digits, in one process and with
  ``engine="ray"`` and 2 workers (inputs/s, and the largest relative difference of the per-sample values);
* a projection (its assumptions printed, change them with the options) of the PatternNet paper's fit
  (VGG-16 on half of ImageNet, 640,583 images) on one 8-GPU node and on 4 such nodes.

    python benchmarks/bench_ray.py                    # 2,000 images, 2 CPUs
    python benchmarks/bench_ray.py --images 500 --cpus 2

The load average is printed before and after: on a machine shared with other jobs, the absolute
numbers move with it; the ratios less.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODEL = os.path.join(ROOT, "models", "digits_cnn.onnx")
HALF_IMAGENET = 640_583  # images: half of ImageNet's 1,281,167 training images (the paper's fit)
# VGG-16's linear layers (M, fan_in): 13 convolutions and 3 dense layers; every one but the last is
# followed by a ReLU (two_component keeps Σm·x·y and Σm·x for those, Σx·y for the last)
VGG16 = [(64, 27), (64, 576), (128, 576), (128, 1152), (256, 1152), (256, 2304), (256, 2304), (512, 2304),
         (512, 4608), (512, 4608), (512, 4608), (512, 4608), (512, 4608), (4096, 25088), (4096, 4096),
         (1000, 4096)]
VGG16_FORWARD_GFLOP = 15.5  # multiply-adds × 2 of one 224x224 image


def machine() -> str:
    from bench_explainer import machine as describe

    return describe()


def make_images(folder: str, n: int) -> list:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits().images
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"d{i:05d}.png")
        Image.fromarray((d[i % len(d)] / 16 * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR).save(p)
        paths.append(p)
    return paths


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def worst_rel(a, b) -> float:
    return max(float(np.max(np.abs(v - b.sums[n][k])) / max(float(np.max(np.abs(v))), 1e-300))
               for n, d in a.sums.items() for k, v in d.items())


def result_bytes(stats) -> int:
    return sum(v.nbytes for d in stats.sums.values() for v in d.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--gpu-forward", type=float, default=600.0,
                    help="assumed VGG-16 forward images/s of one GPU in onnxruntime (fp32/TF32, A100 class)")
    ap.add_argument("--decode", type=float, default=120.0,
                    help="assumed ImageNet JPEG decode+resize images/s of one CPU core (Pillow)")
    ap.add_argument("--cores", type=int, default=96, help="assumed CPU cores of a GPU node")
    ap.add_argument("--net", type=float, default=1.25, help="assumed GB/s between nodes (10 GbE)")
    ap.add_argument("--eval-images", type=int, default=256, help="inputs of the evaluate comparison")
    args = ap.parse_args()
    os.chdir(ROOT)  # Ray's workers import onnxplain from the driver's working directory (or an install)

    import ray

    from onnxplain.patterns import fit_statistics

    print(f"machine: {machine()}")
    print(f"data: {args.images} digits PNG 32x32, batch {args.batch}, models/digits_cnn.onnx, two_component\n")
    with tempfile.TemporaryDirectory() as tmp:
        make_images(tmp, args.images)
        batches = -(-args.images // args.batch)
        fit_statistics(MODEL, tmp, batch_size=args.batch, limit=args.batch)  # warm-up: imports, first session
        local, t_local = timed(lambda: fit_statistics(MODEL, tmp, batch_size=args.batch))
        print(f"one process           {args.images / t_local:8.1f} images/s  ({t_local:.2f} s)")
        _, t_start = timed(lambda: ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR"))
        print(f"Ray start (local, {args.cpus} CPUs) {t_start:.1f} s (once per job; joining a running instance: less)")
        t_ray, rate = {}, {}
        for w in (1, 2):
            ticks, t0 = [], time.perf_counter()
            res, t_ray[w] = timed(lambda: fit_statistics(MODEL, tmp, batch_size=args.batch, engine="ray", workers=w,
                                                         progress=lambda n: ticks.append((time.perf_counter(), n))))
            rel = worst_rel(local, res)
            # the first report: the workers are up (started, model canonicalised) and have fitted a batch
            later = sum(n for _, n in ticks[1:])
            steady = rate[w] = later / max(ticks[-1][0] - ticks[0][0], 1e-9)
            print(f"Ray, {w} worker{'s' if w > 1 else ' '}       {args.images / t_ray[w]:8.1f} images/s  "
                  f"({t_ray[w]:.2f} s, of which {ticks[0][0] - t0:.1f} s until the first report; after it "
                  f"{steady:.0f} images/s; max rel. difference to one process {rel:.1e})")
        # overhead: a no-op call
        noop = ray.remote(_Noop).remote()
        ray.get(noop.f.remote())
        _, t = timed(lambda: [ray.get(noop.f.remote()) for _ in range(200)])
        print(f"\nRay overhead: no-op actor call round trip {t / 200 * 1e3:.2f} ms")
        # overhead: one more shard (call + result of sums), 1 worker: shards of one batch vs one shard
        _, t_many = timed(lambda: fit_statistics(MODEL, tmp, batch_size=args.batch, engine="ray", workers=1,
                                                 shard_size=args.batch))
        _, t_one = timed(lambda: fit_statistics(MODEL, tmp, batch_size=args.batch, engine="ray", workers=1,
                                                shard_size=args.images))
        per_shard = (t_many - t_one) / max(batches - 1, 1)
        print(f"Ray overhead per extra shard (call + {result_bytes(local) / 1e3:.0f} kB of sums back): "
              f"{per_shard * 1e3:.1f} ms ({batches} one-batch shards {t_many:.2f} s vs 1 shard {t_one:.2f} s)")
        print(f"(Ray 1 worker − one process) / batch: {(t_ray[1] - t_local) / batches * 1e3:.1f} ms over "
              f"{batches} batches (incl. the worker's start and canonicalisation; per-batch cost inside a "
              "shard: one fire-and-forget progress message)")
        print(f"2 workers vs 1: {t_ray[1] / t_ray[2]:.2f}x in total, {rate[2] / rate[1]:.2f}x once the workers are up "
              f"({args.cpus} CPUs shared with the load above)")
        bench_evaluate(args.eval_images, args.batch)
        ray.shutdown()
    print(f"machine after: {machine()}")
    project(args)


def bench_evaluate(n: int, batch: int):
    """evaluate() in one process vs on Ray (2 workers, shards of 2 batches): inputs/s and the worst relative
    difference of the per-sample values."""
    from PIL import Image

    import onnxplain

    with tempfile.TemporaryDirectory() as tmp:
        x = np.stack([np.asarray(Image.open(p), np.float32)[None] / 255 for p in make_images(tmp, n)])
    methods = ["gradient", "lrp.epsilon_plus_flat"]
    metrics = {"region_perturbation": {"patch_size": 4, "regions": 16}, "pixel_flipping": {"steps": 16},
               "faithfulness_correlation": {"nr_runs": 20, "subset_size": 32}, "sparseness": {}}
    one, t_one = timed(lambda: onnxplain.evaluate(MODEL, x, methods, metrics, batch_size=batch, progress=False))
    many, t_many = timed(lambda: onnxplain.evaluate(MODEL, x, methods, metrics, batch_size=batch, engine="ray",
                                                    workers=2, shard_size=2 * batch, progress=False))
    worst = max(float(np.max(np.abs(many.per_sample[m][k] - v) / np.maximum(np.abs(v), 1e-12)))
                for m in methods for k, v in one.per_sample[m].items())
    print(f"\nevaluate, {n} inputs, 2 methods x 4 metrics: one process {n / t_one:.1f} inputs/s ({t_one:.2f} s); "
          f"Ray, 2 workers {n / t_many:.1f} inputs/s ({t_many:.2f} s, workers' start included); "
          f"max rel. difference of the per-sample values {worst:.1e}")


class _Noop:
    def f(self):
        return None


def project(args):
    sums_gb = sum((2 if i < len(VGG16) - 1 else 1) * m * f for i, (m, f) in enumerate(VGG16)) * 8 / 1e9
    stats_gflop = 3 * VGG16_FORWARD_GFLOP  # forward + one correlation per kept target (2) ≈ 3 forwards
    per_gpu = args.gpu_forward * VGG16_FORWARD_GFLOP / stats_gflop
    print("\nprojection: PatternNet's fit of VGG-16 on half of ImageNet "
          f"({HALF_IMAGENET:,} images; the paper: 3-4 h on 4 GPUs)")
    print(f"  assumptions: statistics graph ≈ 3 forwards (forward + Σm·x·y and Σm·x correlations, each as many"
          f" multiply-adds as the layer) → {per_gpu:.0f} images/s per GPU from {args.gpu_forward:.0f} forward"
          f" images/s (--gpu-forward); JPEG decode {args.decode:.0f} images/s per core on {args.cores} cores"
          f" (--decode, --cores); one shard result = {sums_gb:.2f} GB of float64 sums; {args.net} GB/s"
          " between nodes (--net); images on a file system every node reads")
    for nodes in (1, 4):
        gpus = 8 * nodes
        rate = min(gpus * per_gpu, nodes * args.cores * args.decode * 0.9)  # a tenth of the cores for the rest
        compute = HALF_IMAGENET / rate
        shards = gpus * 4
        # results reach the driver's node: over shared memory on it (~5 GB/s), over the network from others
        transfer = shards * sums_gb * ((nodes - 1) / nodes / args.net + 1 / nodes / 5.0)
        bound = "GPU" if gpus * per_gpu <= nodes * args.cores * args.decode * 0.9 else "decode"
        print(f"  {nodes} node{'s' if nodes > 1 else ' '} × 8 GPUs: {rate:6.0f} images/s ({bound}-bound) → "
              f"{compute / 60:5.1f} min fitting + {transfer / 60:4.1f} min sending {shards} shard results "
              f"(4 per worker; fewer: shard_size=) ≈ {(compute + transfer) / 60:5.1f} min")


if __name__ == "__main__":
    main()
