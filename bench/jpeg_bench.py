"""From JPEG files to two 224 px views, per core: our pipelines against the reference's PIL loader.

`bench/pipeline.py --source jpeg` writes a folder of ImageNet-sized JPEGs (textured,
deterministic in `--seed`) and runs each contender in a worker process of its own,
pinned to one core (`os.sched_setaffinity`; TensorFlow with one intra-op and one
inter-op thread). The driver asks the workers for one round each in turn, the order
alternating (A B C, C B A, ...), so the load of a shared machine falls on all alike;
the ratios to quote are per round, against the reference's round beside it.

Contenders:
  reference  PIL decode and the official transforms of facebookresearch/simsiam
             `main_simsiam.py` (`reference_transforms.py`; torchvision's own when
             importable), two views per image, stacked into batches as the DataLoader
             collates them.
  package    `simsiam_tf.data.load_source("folder")` + `make_pretrain_dataset` with
             `TwoViewAugment(224)`, the ImageNet recipe of flags/imagenet_resnet50.cfg:
             what users get (at 224 px the folder takes the per-image path from the
             files: header windows, one partial decode, per-image photometric ops).
             package:crops stops at the uint8 crops (`photometric_on_host=False`).
  fast       JPEG crop windows from the header and partial decodes
             (`simsiam_tf.augment.jpeg.random_view_crops`), then the package's colour,
             grayscale and blur ops per image, only those each view drew
             (`simsiam_tf.augment.per_image.appearance`), then batching. Options, joined
             with ':': the decode mode (union, the default; per_view; full), noaa
             (plain bilinear resize), batched (uint8 crops batched, then
             `TwoViewAugment.appearance` on the batch), crops (stop after the
             geometric stage: the host's share when the photometric ops run on
             the accelerator; uint8 views).

A round builds a fresh iterator, pulls one batch untimed (the pipeline fills), then
times `--batches_per_round` batches (wall and CPU seconds of the worker, all threads)
and drops the iterator, so no pipeline works ahead while another contender runs.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONTENDERS = ("reference", "package", "fast")


# --------------------------------------------------------------------------- images


def texture(rng, width, height):
    """A photo-like uint8 image: oriented gratings of several frequencies per channel, plus grain."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        field = np.full((height, width), rng.uniform(60, 190), np.float32)
        for _ in range(4):
            theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.005, 0.12), rng.uniform(0, 2 * np.pi)
            field += rng.uniform(10, 40) * np.sin(freq * (x * np.cos(theta) + y * np.sin(theta)) + phase)
        image[..., c] = field
    image += rng.normal(0, 8, (height, width, 1)) + rng.normal(0, 3, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_jpegs(folder, num_images, width, height, quality, seed):
    """`num_images` JPEGs of width x height at `quality` in `folder`; returns their paths and mean file size."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num_images):
        path = os.path.join(folder, f"img_{i:05d}.jpg")
        Image.fromarray(texture(rng, width, height)).save(path, "JPEG", quality=quality)
        paths.append(path)
    mean_bytes = sum(os.path.getsize(p) for p in paths) / len(paths)
    return paths, mean_bytes


# --------------------------------------------------------------------------- contenders (worker side)


def _pin(core):
    os.sched_setaffinity(0, {core})


def _tf_one_core():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def package_dataset(data_dir, batch, image_size, seed, crops_only=False):
    """Our folder source and pretraining pipeline, the ImageNet recipe; `crops_only`: uint8 crops, no photometric ops."""
    from simsiam_tf import augment, data

    source = data.load_source("folder", data_dir=data_dir, image_size=image_size)
    return data.make_pretrain_dataset(
        source, batch, augment.TwoViewAugment(image_size), seed=seed, photometric_on_host=not crops_only
    )


def fast_dataset(paths, batch, image_size, seed, mode="union", antialias=True, batched=False, crops_only=False):
    """The JPEG fast path: header crop windows, partial decodes, uint8 crops, then the package's appearance ops.

    By default the photometric stage runs per image before batching
    (`simsiam_tf.augment.per_image.appearance`); `batched=True` runs `TwoViewAugment.appearance`
    on the batched uint8 crops instead. `crops_only=True` stops after the geometric
    stage: uint8 views, what the host would still do with the photometric stage on
    the accelerator.
    """
    import tensorflow as tf

    from simsiam_tf import augment
    from simsiam_tf.augment import jpeg, per_image

    aug = augment.TwoViewAugment(image_size)
    base = tf.constant([seed, 0], tf.int64)
    fold = tf.random.experimental.stateless_fold_in

    def crops(index, path):
        return jpeg.random_view_crops(
            tf.io.read_file(path),
            fold(base, index),
            image_size,
            aug.crop_scale,
            aug.crop_ratio,
            aug.flip_prob,
            mode=mode,
            antialias=antialias,
        )

    def views_of_image(index, path):
        pair = crops(index, path)
        s1, s2 = tf.unstack(tf.random.experimental.stateless_split(fold(fold(base, -1), index), 2))
        return per_image.appearance(pair[0], s1, aug), per_image.appearance(pair[1], s2, aug)

    def views_of_batch(step, pairs):
        s1, s2 = tf.unstack(tf.random.experimental.stateless_split(fold(fold(base, -1), step), 2))
        return aug.appearance(pairs[:, 0], s1), aug.appearance(pairs[:, 1], s2)

    ds = tf.data.Dataset.from_tensor_slices(paths).repeat().enumerate()
    if crops_only:
        ds = ds.map(crops, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
        ds = ds.map(lambda pairs: (pairs[:, 0], pairs[:, 1]))
    elif batched:
        ds = ds.map(crops, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
        ds = ds.enumerate().map(views_of_batch, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(views_of_image, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


class _TFContender:
    def __init__(self, make_dataset, batch, image_size):
        self.make_dataset = make_dataset
        self.dataset = make_dataset()
        self.batch, self.image_size = batch, image_size

    def round(self, batches):
        iterator = iter(self.dataset)
        next(iterator)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(batches):
            v1, v2 = next(iterator)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert v1.shape == (self.batch, self.image_size, self.image_size, 3) == v2.shape
        del iterator
        return wall, cpu


class _ReferenceContender:
    def __init__(self, paths, batch, image_size, seed):
        sys.path.insert(0, HERE)
        import reference_transforms

        self.loader = reference_transforms.ReferenceLoader(image_size, seed)
        self.paths, self.batch, self.image_size, self.position = paths, batch, image_size, 0

    def _next_paths(self):
        picked = [self.paths[(self.position + i) % len(self.paths)] for i in range(self.batch)]
        self.position += self.batch
        return picked

    def round(self, batches):
        self.loader.batch(self._next_paths())
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(batches):
            v1, v2 = self.loader.batch(self._next_paths())
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert v1.shape == (self.batch, 3, self.image_size, self.image_size) and v2.dtype.name == "float32"
        return wall, cpu


def parse_contender(name):
    """'fast:union:noaa' -> ('fast', {'mode': 'union', 'antialias': False}); 'fast:batched' batches the appearance."""
    kind, *options = name.split(":")
    if kind not in CONTENDERS:
        raise ValueError(f"unknown contender {name!r}: expected one of {CONTENDERS} or fast:OPTION[:OPTION...]")
    settings = {}
    for option in options:
        if kind == "package" and option == "crops":
            settings["crops_only"] = True
            continue
        if kind != "fast":
            raise ValueError(f"contender {kind!r} takes no options (package takes 'crops'), got {name!r}")
        if option == "noaa":
            settings["antialias"] = False
        elif option == "batched":
            settings["batched"] = True
        elif option == "crops":
            settings["crops_only"] = True
        elif option in ("per_view", "union", "full"):
            settings["mode"] = option
        else:
            raise ValueError(
                f"unknown option {option!r} in {name!r}: expected per_view, union, full, noaa, batched or crops"
            )
    return kind, settings


def serve(name, data_dir, batch, image_size, seed, core):
    """Worker side: pinned to `core`; one timed round per "round N" line on stdin, one JSON line back."""
    _pin(core)
    kind, settings = parse_contender(name)
    paths = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir) if f.endswith(".jpg"))
    info = {"contender": name, "cores": len(os.sched_getaffinity(0))}
    if kind == "reference":
        contender = _ReferenceContender(paths, batch, image_size, seed)
        info["torchvision"] = contender.loader.uses_torchvision
    else:
        tf = _tf_one_core()
        if kind == "package":
            contender = _TFContender(
                lambda: package_dataset(data_dir, batch, image_size, seed, **settings), batch, image_size
            )
        else:
            contender = _TFContender(
                lambda: fast_dataset(paths, batch, image_size, seed, **settings), batch, image_size
            )
        info["tf_threads"] = [
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        ]
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        wall, cpu = contender.round(int(command[1]))
        print(json.dumps({"wall_s": wall, "cpu_s": cpu}), flush=True)


# --------------------------------------------------------------------------- driver side


class Worker:
    def __init__(self, script, name, data_dir, args, core):
        cmd = [
            sys.executable,
            script,
            "--serve_jpeg",
            name,
            "--data_dir",
            data_dir,
            "--batch",
            str(args.batch),
            "--image_size",
            str(args.image_size[0]),
            "--seed",
            str(args.seed),
            "--core",
            str(core),
        ]
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._read()

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name!r} exited with code {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def round(self, batches):
        self.proc.stdin.write(f"round {batches}\n")
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def _spread(values, digits=1):
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def run(args, script, environment):
    """The side-by-side; returns the result dict (the JSON line)."""
    names = list(args.contenders)
    for name in names:
        parse_contender(name)
    if "reference" not in names:
        raise ValueError("--contenders must include 'reference' (the ratios are against it)")
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    size = args.image_size[0]
    images_per_round = args.batch * args.batches_per_round
    with tempfile.TemporaryDirectory(prefix="jpeg_bench_") as folder:
        width, height = args.jpeg_size
        _, mean_bytes = write_jpegs(folder, args.num_images, width, height, args.quality, args.seed)
        workers = [Worker(script, name, folder, args, core) for name in names]
        try:
            for worker in workers:  # untimed: traces the functions, fills the caches
                worker.round(1)
            per_round = {name: [] for name in names}
            for r in range(args.rounds):
                order = workers if r % 2 == 0 else workers[::-1]
                for worker in order:
                    per_round[worker.name].append(worker.round(args.batches_per_round))
                print(
                    json.dumps(
                        {"round": r, **{n: round(images_per_round / v[-1]["wall_s"], 1) for n, v in per_round.items()}}
                    ),
                    flush=True,
                )
        finally:
            for worker in workers:
                worker.close()
    results = {}
    ref = per_round["reference"]
    for worker in workers:
        rounds = per_round[worker.name]
        wall_rate = [images_per_round / x["wall_s"] for x in rounds]
        cpu_rate = [images_per_round / x["cpu_s"] for x in rounds]
        entry = {
            "images_per_s_per_core": _spread(wall_rate),
            "images_per_cpu_s": _spread(cpu_rate),
            "cpu_ms_per_image": round(1000 * statistics.median(x["cpu_s"] for x in rounds) / images_per_round, 2),
            **{k: v for k, v in worker.info.items() if k not in ("ready", "contender")},
        }
        if worker.name != "reference":
            entry["ratio_to_reference"] = _spread([r["wall_s"] / x["wall_s"] for r, x in zip(ref, rounds)], 2)
            entry["cpu_ratio_to_reference"] = _spread([r["cpu_s"] / x["cpu_s"] for r, x in zip(ref, rounds)], 2)
        results[worker.name] = entry
    return {
        "bench": "pipeline",
        "source": "jpeg",
        "image_size": size,
        "batch": args.batch,
        "rounds": args.rounds,
        "images_per_round": images_per_round,
        "jpegs": {
            "count": args.num_images,
            "width": args.jpeg_size[0],
            "height": args.jpeg_size[1],
            "quality": args.quality,
            "mean_bytes": int(mean_bytes),
        },
        "core": core,
        "threads": {"affinity_cores": 1, "tf_intra_op": 1, "tf_inter_op": 1},
        "results": results,
        "images_per_s": results[names[-1]]["images_per_s_per_core"]["median"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "environment": environment,
    }
