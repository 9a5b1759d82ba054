"""Throughput of one SimSiam pretraining step: the library's own compiled train step.

The model, optimizer and step are exactly what `simsiam-pretrain` trains with: the
model from `simsiam_tf.builders.build_model`, `CoupledSGD` (momentum 0.9,
coupled weight decay 1e-4) from `build_optimizer`, `model.compile(jit_compile=...)`,
and the function `model.make_train_function()` builds, which is the one `model.fit`
calls every step. Inputs are fixed random views (no input pipeline), as in the
PyTorch reference step (`torch_simsiam_step.py`), whose network this matches by
default: ResNet-18 with the CIFAR stem, 3-layer projector of width 2048, predictor
bottleneck 512.

  python bench/step.py --backbone resnet18_cifar --image_size 32 --batch 128 --precision float32

The last output line is JSON: images/s (batch / median step time, one "image" being
one pair of views, as the reference counts), the median, min and max step times over
the timed steps after warm-up, the first step's time (tracing and, with XLA,
compilation), peak host RSS, peak GPU memory on a GPU, and the model FLOP rate from
an analytic count (3x the forward FLOPs of both views: forward, and backward for
activations and weights). With `--peak_tflops` it also reports MFU.
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
BACKBONES = (
    "resnet18_cifar",
    "resnet18",
    "resnet34_cifar",
    "resnet34",
    "resnet50_cifar",
    "resnet50",
    "small_resnet",
    "small_vgg",
)


# The reference step's network and optimizer (torch_simsiam_step.py defaults), whatever
# the demo defaults of the library's configs are.
REFERENCE_MODEL = {"width_multiplier": 1.0, "dim": 2048, "pred_dim": 512, "projector_layers": 3}
REFERENCE_SGD = {"base_lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


def add_model_args(parser):
    """Flags shared by the bench scripts.

    The network defaults to the reference step's; precision and XLA default to the
    library's `RuntimeConfig`, which is what `simsiam-pretrain` runs with.
    """
    from simsiam_tf import config as config_lib

    runtime = config_lib.RuntimeConfig()
    parser.add_argument("--backbone", default="resnet18_cifar", choices=BACKBONES)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128, help="images per step (each gives two views)")
    parser.add_argument(
        "--precision", default=runtime.precision, choices=PRECISIONS, help="default: RuntimeConfig.precision"
    )
    parser.add_argument(
        "--jit_compile",
        default=runtime.jit_compile,
        action=argparse.BooleanOptionalAction,
        help="XLA-compile the train step (default: RuntimeConfig.jit_compile)",
    )
    parser.add_argument("--width_multiplier", type=float, default=REFERENCE_MODEL["width_multiplier"])
    parser.add_argument("--dim", type=int, default=REFERENCE_MODEL["dim"])
    parser.add_argument("--pred_dim", type=int, default=REFERENCE_MODEL["pred_dim"])
    parser.add_argument("--projector_layers", type=int, default=REFERENCE_MODEL["projector_layers"], choices=(2, 3))
    parser.add_argument(
        "--small_map_grad",
        default="auto",
        choices=("auto", "on", "off"),
        help="filter gradient of small-map backbone convs as a forward convolution: auto (the per-dtype "
        "default of simsiam_tf.backbones.small_map_grad_by_default), on or off",
    )
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0 keeps TensorFlow's default")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="0 keeps TensorFlow's default")
    parser.add_argument("--seed", type=int, default=0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first one traces/compiles)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument(
        "--feed",
        default="dataset",
        choices=("dataset", "tensors"),
        help="dataset: a tf.data iterator, as fit feeds the step; tensors: views already on the compute "
        "device, as the reference's (use on a GPU)",
    )
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="device peak for MFU (0: not reported)")
    parser.add_argument("--profile_dir", default=None, help="write a TensorFlow profiler trace of the timed steps")
    parser.add_argument(
        "--ab",
        default="none",
        choices=("none", "keras_bn", "conv_grad", "jit"),
        help="also time the same model with one setting changed, alternating steps in this process: "
        "keras_bn (Keras' BatchNormalization computation instead of the fused kernel), conv_grad (the "
        "small-map filter gradient flipped: the forward-convolution form against oneDNN's backward-weights "
        "kernel) or jit (XLA flipped); "
        "reported under 'ab' as the default's speed-up",
    )
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    return args


def configure_threads(intra, inter):
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def pretrain_config(args, batch=None):
    """The `PretrainConfig` of the bench flags (what `simsiam-pretrain` would build from them)."""
    from simsiam_tf import config as config_lib

    return config_lib.replace(
        config_lib.PretrainConfig(),
        batch_size=batch or args.batch,
        epochs=1,
        **REFERENCE_SGD,
        **{
            "runtime.precision": args.precision,
            "runtime.jit_compile": args.jit_compile,
            "runtime.seed": args.seed,
            "data.image_size": args.image_size,
            "model.backbone": args.backbone,
            "model.width_multiplier": args.width_multiplier,
            "model.dim": args.dim,
            "model.pred_dim": args.pred_dim,
            "model.projector_layers": args.projector_layers,
        },
    )


def build_compiled_model(config, total_steps=1000):
    """SimSiam model and CoupledSGD built and compiled as the pretraining job does."""
    import tensorflow as tf

    from simsiam_tf import builders, distribute

    distribute.set_precision(config.runtime.precision)
    strategy = tf.distribute.get_strategy()
    model = builders.build_model(config, strategy)
    optimizer = builders.build_pretrain_optimizer(config, model, total_steps=total_steps, steps_per_epoch=total_steps)
    model.compile(optimizer=optimizer, jit_compile=config.runtime.jit_compile)
    optimizer.build(model.trainable_variables)
    return model


def random_views(batch, image_size, seed, device=None):
    import tensorflow as tf

    def make():
        x1 = tf.random.stateless_uniform([batch, image_size, image_size, 3], [seed, 1])
        x2 = tf.random.stateless_uniform([batch, image_size, image_size, 3], [seed, 2])
        return tf.identity(x1), tf.identity(x2)

    if device is None:
        return make()
    with tf.device(device):
        return make()


def forward_flops_per_image(args):
    """Analytic forward FLOPs of one view through backbone, projector and predictor (2 per MAC).

    Convolutions and dense layers only; BN, ReLU, additions and pooling are left out
    (well under 1% of the total).
    """
    import keras

    from simsiam_tf import backbones

    arch, cifar_stem = backbones.parse_backbone_name(args.backbone)
    net = backbones.build_backbone(
        arch,
        cifar_stem=cifar_stem,
        width_multiplier=args.width_multiplier,
        input_shape=(args.image_size, args.image_size, 3),
    )
    flops = 0
    for layer in net.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            _, h, w, cout = layer.output.shape
            flops += 2 * kh * kw * cin * cout * h * w
    feat = backbones.feature_dim(net)
    widths = [feat] + [feat] * (args.projector_layers - 1) + [args.dim]
    flops += sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    flops += 2 * args.dim * args.pred_dim * 2
    keras.backend.clear_session()
    return int(flops)


def peak_memory_mb():
    """(peak host RSS, peak GPU memory or None) in MiB."""
    import tensorflow as tf

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    gpu = None
    if tf.config.list_logical_devices("GPU"):
        gpu = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return round(rss, 1), None if gpu is None else round(gpu, 1)


def environment():
    """Versions, devices and the CPU (model, family/model, ISA flags, ISA cap, threads)."""
    import keras
    import tensorflow as tf

    from simsiam_tf import cpu as cpu_lib

    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        gpu_names.append(details.get("device_name", gpu.name))
    info = cpu_lib.host()
    env = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu": info.model_name,
        "cpu_cores": info.threads,
    }
    env.update(info.summary())
    env.update(
        gpus=gpu_names,
        onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        intra_op_threads=_threads("intra"),
        inter_op_threads=_threads("inter"),
    )
    return env


def _threads(kind):
    import tensorflow as tf

    if kind == "intra":
        return tf.config.threading.get_intra_op_parallelism_threads()
    return tf.config.threading.get_inter_op_parallelism_threads()


def summarize(times, batch):
    """Median, min and max of step times, and images/s at each."""
    med = statistics.median(times)
    return {
        "images_per_s": round(batch / med, 2),
        "images_per_s_min": round(batch / max(times), 2),
        "images_per_s_max": round(batch / min(times), 2),
        "step_s_median": round(med, 4),
        "step_s_min": round(min(times), 4),
        "step_s_max": round(max(times), 4),
    }


def unfuse_batchnorm(model):
    """Switches every fused BN layer of `model` to the Keras layer's own computation."""
    from simsiam_tf import backbones

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, backbones.FusedBatchNormalization):
            layer.fused = False


def set_small_map_grad(model, value):
    """Sets `small_map_grad` (None: per-CPU default, True, False) on every backbone conv of `model`."""
    from simsiam_tf import backbones

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, backbones.Conv2D):
            layer.small_map_grad = value


SMALL_MAP_GRAD = {"auto": None, "on": True, "off": False}


def resolved_small_map_grad(args):
    """Whether the small-map filter gradient is on for the run's compute dtype (auto resolved)."""
    from simsiam_tf import backbones

    value = SMALL_MAP_GRAD[args.small_map_grad]
    if value is not None:
        return value
    dtype = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[args.precision]
    return backbones.small_map_grad_by_default(dtype)


def timed_step(model, views, feed):
    """A callable running one train step through `model.train_function`: (wall s, CPU s, loss)."""
    import tensorflow as tf

    model.make_train_function()
    step_fn = model.train_function
    if feed == "dataset":
        iterator = iter(tf.data.Dataset.from_tensors(views).repeat())

        def step():
            return step_fn(iterator)

    else:

        def step():
            return step_fn(iter([views]))

    def timed():
        start, cpu_start = time.perf_counter(), time.process_time()
        logs = step()
        loss = float(logs["loss"])  # waits for the step to finish
        return time.perf_counter() - start, time.process_time() - cpu_start, loss

    return timed


def run(args):
    import tensorflow as tf

    configure_threads(args.intra_op_threads, args.inter_op_threads)
    config = pretrain_config(args)
    config.validate()
    flops = forward_flops_per_image(args)
    model = build_compiled_model(config)
    set_small_map_grad(model, SMALL_MAP_GRAD[args.small_map_grad])
    gpu = bool(tf.config.list_logical_devices("GPU"))
    views = random_views(args.batch, args.image_size, args.seed, "/GPU:0" if gpu and args.feed == "tensors" else None)
    variants = {"default": timed_step(model, views, args.feed)}
    if args.ab != "none":
        # The same model (same seed, same initial weights) with the one setting changed.
        other_config = config
        if args.ab == "jit":
            other_config = pretrain_config(args)
            other_config = dataclasses.replace(
                other_config, runtime=dataclasses.replace(other_config.runtime, jit_compile=not args.jit_compile)
            )
        other = build_compiled_model(other_config)
        if args.ab == "keras_bn":
            unfuse_batchnorm(other)
        elif args.ab == "conv_grad":
            set_small_map_grad(other, not resolved_small_map_grad(args))
        else:
            set_small_map_grad(other, SMALL_MAP_GRAD[args.small_map_grad])
        variants["other"] = timed_step(other, views, args.feed)

    first_step_s, first_loss = {}, {}
    for name, timed in variants.items():
        first_step_s[name], _, first_loss[name] = timed()
        for _ in range(args.warmup - 1):
            timed()
    if args.profile_dir:
        tf.profiler.experimental.start(args.profile_dir)
    times = {name: [] for name in variants}
    cpu_times = {name: [] for name in variants}
    names = list(variants)
    for i in range(args.steps):
        for name in names if i % 2 == 0 else names[::-1]:
            elapsed, cpu, loss = variants[name]()
            times[name].append(elapsed)
            cpu_times[name].append(cpu)
    if args.profile_dir:
        tf.profiler.experimental.stop()
    rss_mb, gpu_mb = peak_memory_mb()

    result = {
        "bench": "step",
        "framework": f"tensorflow {tf.__version__}",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "width_multiplier": args.width_multiplier,
        "dim": args.dim,
        "pred_dim": args.pred_dim,
        "projector_layers": args.projector_layers,
        "small_map_grad": resolved_small_map_grad(args),
        "feed": args.feed,
        "device": "gpu" if gpu else "cpu",
        "warmup": args.warmup,
        "steps": args.steps,
    }
    result.update(summarize(times["default"], args.batch))
    step_flops = 3 * 2 * args.batch * flops
    tflops = step_flops / statistics.median(times["default"]) / 1e12
    result.update(
        cpu_s_per_step_median=round(statistics.median(cpu_times["default"]), 4),
        load_average=[round(x, 2) for x in os.getloadavg()],
        first_step_s=round(first_step_s["default"], 2),
        first_loss=round(first_loss["default"], 6),
        model_gflops_per_image_forward=round(flops / 1e9, 4),
        model_tflops_per_step=round(step_flops / 1e12, 4),
        model_tflops_per_s=round(tflops, 4),
        peak_host_rss_mb=rss_mb,
        peak_gpu_mb=gpu_mb,
        environment=environment(),
    )
    if args.peak_tflops:
        result["mfu"] = round(tflops / args.peak_tflops, 4)
    if args.ab != "none":
        ratios = [o / d for d, o in zip(times["default"], times["other"])]
        cpu_ratios = [o / d for d, o in zip(cpu_times["default"], cpu_times["other"])]
        changed = {
            "jit": f"jit_compile={not args.jit_compile}",
            "conv_grad": f"small_map_grad={not resolved_small_map_grad(args)}",
        }.get(args.ab, args.ab)
        other = {"changed": changed}
        other.update(summarize(times["other"], args.batch))
        other.update(
            cpu_s_per_step_median=round(statistics.median(cpu_times["other"]), 4),
            first_step_s=round(first_step_s["other"], 2),
            first_loss=round(first_loss["other"], 6),
            speedup_of_default=round(statistics.median(times["other"]) / statistics.median(times["default"]), 3),
            pair_speedup_median=round(statistics.median(ratios), 3),
            pair_speedup_min=round(min(ratios), 3),
            pair_speedup_max=round(max(ratios), 3),
            cpu_speedup_of_default=round(
                statistics.median(cpu_times["other"]) / statistics.median(cpu_times["default"]), 3
            ),
            pair_cpu_speedup_min=round(min(cpu_ratios), 3),
            pair_cpu_speedup_max=round(max(cpu_ratios), 3),
        )
        result["ab"] = other
    return result


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    args = parse_args(argv)
    result = run(args)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
