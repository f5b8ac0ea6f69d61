"""Data pipeline benchmark: a folder of image files, read through the decoded cache against decoding the files.

    python scripts/benchmark_data_pipeline.py                    # 50,000 PNGs of 3x32x32 in /tmp
    python scripts/benchmark_data_pipeline.py --images 5000 --repeats 2 --out /tmp/results

The script writes a synthetic CIFAR-shaped folder (`synthetic` images saved as PNG into
ROOT/labeled/<class>/, outside the repository: --folder, reused when complete) and times, the median of
--repeats each:

- start-up: `image_folder` without the cache (listing plus PIL's structure check of every file), the cache
  build (each --build-workers count; a fresh cache folder every time), and a start from the built cache
  (listing, stat, key, memory map);
- the training loader with augment_on=device, i.e. what reaches the training step: uint8 batches of B
  labeled plus mu*B unlabeled images, gathered from the cache (one fancy index of the memory map) or
  decoded from the files (PIL, one file at a time), for each B and loader worker count;
- for information, the weak + strong views (`on_after_batch_transfer`) built on this CPU, which on a GPU
  run on the device.

Target: the cached loader delivers at least 51,000 images/s (100 steps/s x 512 images), so that it never
bounds a GPU run. Output: docs/results/data_pipeline.md and data_pipeline.json.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch

from ssl_train.data.cache import usable_cpus
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import image_folder, synthetic
from ssl_train.export.measure import cpu_name
from ssl_train.io import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
TARGET = 51_000  # images/s: 100 steps/s x 512 images


def make_folder(folder: Path, images: int, size: int, classes: int) -> Path:
    """`images` synthetic RGB PNGs in folder/labeled/<class>/ (reused when a previous run completed it)."""
    from PIL import Image

    spec = f"{images} {size} {classes}"
    marker = folder / "complete.txt"
    if marker.is_file() and marker.read_text() == spec:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    source = synthetic(num_samples=images, num_classes=classes, image_shape=(3, size, size))
    pixels = source.train.images.permute(0, 2, 3, 1).numpy()
    for c in range(classes):
        (folder / "labeled" / f"class{c}").mkdir(parents=True)
    for i, (image, label) in enumerate(zip(pixels, source.train.labels)):
        Image.fromarray(image).save(folder / "labeled" / f"class{label}" / f"{i:06d}.png")
    marker.write_text(spec)
    return folder


def timed(fn, repeats: int) -> tuple[list[float], list]:
    """Wall times of `repeats` calls of fn() and their results."""
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - start)
    return times, results


def loader_step(source, batch_size: int, mu: int, workers: int, warmup: int, steps: int, repeats: int,
                num_labels: int) -> list[float]:
    """Seconds per training batch from a fresh loader (augment_on=device: uint8 only), per repeat."""
    datamodule = SSLDataModule(lambda: source, num_labels=num_labels, batch_size=batch_size, mu=mu,
                               val_size=1000, test_size=1000, num_workers=workers, augment_on="device")
    datamodule.setup()
    per_step = []
    for _ in range(repeats):
        loader = iter(datamodule.train_dataloader())
        for _ in range(warmup):
            next(loader)
        start = time.perf_counter()
        for _ in range(steps):
            batch = next(loader)
        per_step.append((time.perf_counter() - start) / steps)
        assert batch["lb"]["x"].dtype == torch.uint8 and len(batch["ulb"]["x"]) == mu * batch_size
        del loader  # stops its workers
    return per_step


def augment_step(source, batch_size: int, mu: int, steps: int, repeats: int, num_labels: int) -> list[float]:
    """Seconds per batch for the weak + strong views of one uint8 batch, on this CPU."""
    datamodule = SSLDataModule(lambda: source, num_labels=num_labels, batch_size=batch_size, mu=mu,
                               val_size=1000, test_size=1000)
    datamodule.setup()
    raw = datamodule.train_dataloader().dataset[0]
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            datamodule.on_after_batch_transfer(raw, 0)
        per_step.append((time.perf_counter() - start) / steps)
    return per_step


def build_fresh(folder: Path, size: int, cache_root: Path, workers: int) -> float:
    """A cold cache build (a new, empty cache folder every call); the CPU seconds it took, workers included."""
    before = os.times()
    image_folder(str(folder), (size, size), cache_dir=tempfile.mkdtemp(dir=cache_root), cache_workers=workers)
    after = os.times()
    return sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def run(args) -> dict:
    load_before = os.getloadavg()
    folder = make_folder(args.folder, args.images, args.size, args.classes)
    files = sorted(folder.rglob("*.png"))
    cache_root = Path(tempfile.mkdtemp(prefix="ssl_train_bench_cache_"))
    try:
        plain_start, plain = timed(lambda: image_folder(str(folder), (args.size, args.size), cache=False),
                                   args.repeats)
        plain = plain[-1]
        builds, build_cpu = {}, {}
        for workers in args.build_workers:
            fresh = functools.partial(build_fresh, folder, args.size, cache_root, workers)
            builds[workers], build_cpu[workers] = timed(fresh, args.repeats)
            print(f"cache build, {workers} workers: {statistics.median(builds[workers]):.1f} s", flush=True)
        kept = cache_root / "kept"
        image_folder(str(folder), (args.size, args.size), cache_dir=kept)
        cached_start, cached = timed(lambda: image_folder(str(folder), (args.size, args.size), cache_dir=kept),
                                     args.repeats)
        cached = cached[-1]
        entry = cached.train.file.parent
        loader = []
        for name, source, steps in (("cache", cached, args.steps), ("files", plain, args.file_steps)):
            for batch_size in args.batch_sizes:
                for workers in args.loader_workers:
                    per_step = loader_step(source, batch_size, args.mu, workers, args.warmup, steps, args.repeats,
                                           args.num_labels)
                    row = {"source": name, "batch_size": batch_size, "mu": args.mu, "workers": workers,
                           "images_per_step": batch_size * (1 + args.mu), "steps": steps, "step_s": per_step}
                    loader.append(row)
                    print(f"{name} B={batch_size} workers={workers}: "
                          f"{row['images_per_step'] / statistics.median(per_step):,.0f} images/s", flush=True)
        augment = [{"batch_size": b, "mu": args.mu, "images_per_step": b * (1 + args.mu),
                    "step_s": augment_step(cached, b, args.mu, args.augment_steps, args.repeats, args.num_labels)}
                   for b in args.batch_sizes]
        return {
            "command": "python scripts/benchmark_data_pipeline.py " + " ".join(
                [f"--images {args.images}", f"--size {args.size}", f"--mu {args.mu}",
                 "--batch-sizes " + " ".join(map(str, args.batch_sizes)),
                 "--loader-workers " + " ".join(map(str, args.loader_workers)),
                 "--build-workers " + " ".join(map(str, args.build_workers)), f"--repeats {args.repeats}"]),
            "machine": cpu_name(), "cpus": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__},
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "folder": {"path": str(folder), "images": len(files), "shape": [3, args.size, args.size],
                       "bytes": sum(p.stat().st_size for p in files)},
            "num_labels": args.num_labels, "repeats": args.repeats, "warmup": args.warmup,
            "start_uncached_s": plain_start, "build_s": {str(w): t for w, t in builds.items()},
            "build_cpu_s": {str(w): t for w, t in build_cpu.items()},
            "start_cached_s": cached_start,
            "cache": {"bytes_on_disk": disk_bytes(entry),
                      "array_bytes": int(np.load(cached.train.file, mmap_mode="r").nbytes)},
            "loader": loader, "augment": augment, "note": args.note,
        }
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(r: dict, out: Path) -> None:
    busy = max(r["load_average_before"][0], r["load_average_after"][0])
    size = r["folder"]["shape"][1]
    lines = [
        "# Data pipeline: an image folder through the decoded cache and from the files", "",
        f"Command: `{r['command']}`", "",
        f"Machine: {r['machine']}, {r['cpus']} CPUs for this process, {r['torch_threads']} torch threads; "
        f"torch {r['versions']['torch']}, numpy {r['versions']['numpy']}, Pillow {r['versions']['pillow']}. "
        f"Load average (1 min) {r['load_average_before'][0]:.1f} before, {r['load_average_after'][0]:.1f} after"
        + (": the machine was busy with other work, so these figures are preliminary." if busy > 0.5 * r["cpus"]
           else "."), "",
        f"Folder: {r['folder']['images']:,} synthetic PNGs of 3x{size}x{size} "
        f"({r['folder']['bytes'] / 2**20:.0f} MiB) in labeled/<10 classes>; {r['num_labels']:,} labels drawn, "
        f"1,000 validation and 1,000 test images carved, the rest unlabeled. Medians of {r['repeats']} repeats.",
        "", "## Training loader (augment_on=device: the loader delivers uint8 batches only)", "",
        f"Images per step = B labeled + mu*B unlabeled. Target: at least {TARGET:,} images/s from the cache "
        "(100 steps/s x 512 images).", "",
        "| source | B | mu | images/step | loader workers | median step (ms) | steps/s | images/s | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["loader"]:
        step = median(row["step_s"])
        rate = row["images_per_step"] / step
        verdict = ("met" if rate >= TARGET else "missed") if row["source"] == "cache" else "-"
        lines.append(f"| {row['source']} | {row['batch_size']} | {row['mu']} | {row['images_per_step']} | "
                     f"{row['workers']} | {step * 1e3:.2f} | {1 / step:.1f} | {rate:,.0f} | {verdict} |")
    cache = r["cache"]
    lines += ["", "## Start-up and the cache", "",
              "CPU time counts this process and its build workers: on an idle machine a build with w workers "
              "takes about CPU time / w.", "", "| what | median wall (s) | median CPU (s) |", "|---|---|---|",
              f"| start without the cache (list and structure-check every file) | "
              f"{median(r['start_uncached_s']):.2f} | |"]
    lines += [f"| cache build, {w} worker{'s' if w != '1' else ''} (decode, resize, write) | {median(t):.2f} | "
              f"{median(r['build_cpu_s'][w]):.2f} |" for w, t in r["build_s"].items()]
    lines += [f"| start from the built cache (list, stat, key, map) | {median(r['start_cached_s']):.2f} | |", "",
              f"Cache size on disk: {cache['bytes_on_disk'] / 2**20:.1f} MiB (the uint8 array is "
              f"{cache['array_bytes'] / 2**20:.1f} MiB: N x 3 x {size} x {size} bytes; plus the JSON index).", "",
              "## Augmentation on this CPU (for information)", "",
              "Weak and strong views of one uint8 batch (`on_after_batch_transfer`), which a GPU run builds on the "
              "device.", "", "| B | mu | images/step | median (ms) | images/s |", "|---|---|---|---|---|"]
    for row in r["augment"]:
        step = median(row["step_s"])
        lines.append(f"| {row['batch_size']} | {row['mu']} | {row['images_per_step']} | {step * 1e3:.1f} | "
                     f"{row['images_per_step'] / step:,.0f} |")
    if r.get("note"):
        lines += ["", "## Notes", "", r["note"]]
    write_text_atomic(out / "data_pipeline.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "data_pipeline.json", r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=32, help="height and width of the images")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--num-labels", type=int, default=4000)
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the images go (default: /tmp/ssl_train_bench_images_<images>_<size>)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--build-workers", type=int, nargs="+", default=sorted({1, usable_cpus()}))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="timed steps from the cache")
    parser.add_argument("--file-steps", type=int, default=3, help="timed steps decoding the files")
    parser.add_argument("--augment-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    args.folder = args.folder or Path(tempfile.gettempdir()) / f"ssl_train_bench_images_{args.images}_{args.size}"
    if args.folder.resolve().is_relative_to(ROOT):
        parser.error(f"--folder {args.folder}: put the images outside the repository")
    results = run(args)
    write_report(results, args.out)
    print((args.out / "data_pipeline.md").read_text())


if __name__ == "__main__":
    main()
