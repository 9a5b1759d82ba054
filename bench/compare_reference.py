"""Our train step against the PyTorch reference step, alternating, in one process.

On a shared machine the speed of either side drifts with the load, so the two steps
are timed one after the other, alternately (reference, ours, ours, reference, ...),
and the figure to quote is the ratio from the same run: our images/s over the
reference's, as the ratio of the median step times and as the median (min-max) of the
ratios of neighbouring steps.

Our side is `bench/step.py`'s: the library's model, CoupledSGD and compiled train
function. The reference side is the network of the reference script (imported from
`--reference`, its own `build()`), stepped as its `main()` steps it: SGD(lr 0.05,
momentum 0.9, weight decay 1e-4), autocast at `--ref_precision`, optional
channels_last and torch.compile.

  python bench/compare_reference.py --reference path/to/torch_simsiam_step.py \
      --backbone resnet18_cifar --image_size 32 --batch 128 --precision float32 --rounds 5

By default (`--mode worker`) the reference steps in a child process of its own that
this one drives step by step, so the two frameworks never share a process (with both
libraries loaded in one process the reference was seen to run a whole run at a
fraction of its standalone speed); `--mode inprocess` steps both in this process.
With `--mode subprocess` the unmodified reference script and `bench/step.py` run
instead as separate processes, alternately, `--rounds` times each (slower: every
process pays its start-up and warm-up).

The last output line is JSON with `ratio` (ours / reference, images/s).
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import step as step_bench  # noqa: E402

REF_PRECISION = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    step_bench.add_model_args(parser)
    parser.add_argument("--reference", required=True, help="path of the reference script torch_simsiam_step.py")
    parser.add_argument(
        "--ref_precision",
        default=None,
        choices=("fp32", "bf16", "fp16"),
        help="reference autocast (default: the one matching --precision)",
    )
    parser.add_argument("--channels_last", action="store_true", help="reference in channels_last memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the reference forward")
    parser.add_argument("--ref_threads", type=int, default=0, help="torch.set_num_threads; 0 keeps the default")
    parser.add_argument("--device", default="cpu", help="reference device (cpu or cuda)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each side first")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps of each side (worker and in-process modes)")
    parser.add_argument(
        "--mode",
        default="worker",
        choices=("worker", "inprocess", "subprocess"),
        help="worker: the reference steps in a child process driven step by step; inprocess: both in "
        "this process; subprocess: both scripts as whole processes, alternately",
    )
    parser.add_argument("--serve_reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process (subprocess mode)")
    args = parser.parse_args(argv)
    if args.ref_precision is None:
        args.ref_precision = REF_PRECISION[args.precision]
    if args.width_multiplier != 1.0:
        parser.error("the reference network has no width multiplier: compare at --width_multiplier 1")
    if args.backbone not in ("resnet18_cifar", "resnet18", "resnet50"):
        parser.error("the reference builds resnet18_cifar, resnet18 and resnet50")
    return args


def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_simsiam_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_step(ref, args):
    """The reference's step, set up as its main() sets it up."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if args.ref_threads:
        torch.set_num_threads(args.ref_threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    encoder, projector, predictor = ref.build(args.backbone, args.dim, args.pred_dim, args.projector_layers)
    modules = nn.ModuleList([encoder, projector, predictor]).to(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    encoder.to(memory_format=fmt)
    opt = torch.optim.SGD(modules.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    shape = (args.batch, 3, args.image_size, args.image_size)
    x1 = torch.rand(*shape, device=dev).contiguous(memory_format=fmt)
    x2 = torch.rand(*shape, device=dev).contiguous(memory_format=fmt)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.ref_precision]
    scaler = torch.amp.GradScaler(dev.type, enabled=args.ref_precision == "fp16")

    def forward():
        z1, z2 = projector(encoder(x1)), projector(encoder(x2))
        p1, p2 = predictor(z1), predictor(z2)
        return -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())

    fwd = torch.compile(forward) if args.compile else forward

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = fwd()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    return step, _torch_description(torch)


def _torch_description(torch):
    """The reference's framework version, ATen's CPU kernel level and thread count, e.g.
    "torch 2.13.0+cpu (ATen AVX2, 1 threads)"."""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__} (ATen {capability}, {torch.get_num_threads()} threads)"


def our_step(args):
    import tensorflow as tf

    step_bench.configure_threads(args.intra_op_threads, args.inter_op_threads)
    config = step_bench.pretrain_config(args)
    config.validate()
    model = step_bench.build_compiled_model(config)
    step_bench.set_small_map_grad(model, step_bench.SMALL_MAP_GRAD[args.small_map_grad])
    model.make_train_function()
    iterator = iter(
        tf.data.Dataset.from_tensors(step_bench.random_views(args.batch, args.image_size, args.seed)).repeat()
    )

    def step():
        return float(model.train_function(iterator)["loss"])

    return step


def _timed(fn, cpu_times=None):
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if cpu_times is not None:
        cpu_times.append(time.process_time() - cpu_start)
    return time.perf_counter() - start


def _pair_stats(ours, ref, batch, ours_cpu=None, ref_cpu=None):
    ratios = [r / o for o, r in zip(ours, ref)]  # (batch / o) / (batch / r)
    result = {
        "ours": step_bench.summarize(ours, batch),
        "reference": step_bench.summarize(ref, batch),
        "ratio": round(statistics.median(ref) / statistics.median(ours), 3),
        "pair_ratio_median": round(statistics.median(ratios), 3),
        "pair_ratio_min": round(min(ratios), 3),
        "pair_ratio_max": round(max(ratios), 3),
    }
    if ours_cpu and ref_cpu:
        # CPU seconds the process spent per step (all threads): less sensitive than
        # wall time to other processes on a shared machine.
        result["ours"]["cpu_s_per_step_median"] = round(statistics.median(ours_cpu), 4)
        result["reference"]["cpu_s_per_step_median"] = round(statistics.median(ref_cpu), 4)
        result["cpu_ratio"] = round(statistics.median(ref_cpu) / statistics.median(ours_cpu), 3)
    return result


def run_inprocess(args):
    ref = load_reference(args.reference)
    ref_step, torch_version = reference_step(ref, args)
    ours = our_step(args)
    first = {"reference": _timed(ref_step), "ours": _timed(ours)}
    for _ in range(args.warmup - 1):
        ref_step()
        ours()
    ours_times, ref_times, ours_cpu, ref_cpu = [], [], [], []
    load_before = os.getloadavg()[0]
    for i in range(args.rounds):
        if i % 2 == 0:
            ref_times.append(_timed(ref_step, ref_cpu))
            ours_times.append(_timed(ours, ours_cpu))
        else:
            ours_times.append(_timed(ours, ours_cpu))
            ref_times.append(_timed(ref_step, ref_cpu))
    result = _pair_stats(ours_times, ref_times, args.batch, ours_cpu, ref_cpu)
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["first_step_s"] = {k: round(v, 2) for k, v in first.items()}
    result["reference_framework"] = torch_version
    return result


def serve_reference(args):
    """Child side of `--mode worker`: one reference step per "step" line on stdin, one JSON line back."""
    ref = load_reference(args.reference)
    step, torch_version = reference_step(ref, args)
    print(json.dumps({"ready": True, "framework": torch_version}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step()
        print(
            json.dumps({"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu_start, "loss": loss}),
            flush=True,
        )


class _ReferenceWorker:
    """The reference step in a child process (`--serve_reference`), stepped on request."""

    def __init__(self, argv):
        cmd = [sys.executable, os.path.abspath(__file__), "--serve_reference"] + list(argv)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.framework = self._read()["framework"]

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the reference worker exited (status {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def step(self, times=None, cpu_times=None):
        self.proc.stdin.write("step\n")
        result = self._read()
        if times is not None:
            times.append(result["wall"])
        if cpu_times is not None:
            cpu_times.append(result["cpu"])
        return result["wall"]

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait()


def run_worker(args, argv):
    worker = _ReferenceWorker(argv)
    try:
        ours = our_step(args)
        first = {"reference": worker.step(), "ours": _timed(ours)}
        for _ in range(args.warmup - 1):
            worker.step()
            ours()
        ours_times, ref_times, ours_cpu, ref_cpu = [], [], [], []
        load_before = os.getloadavg()[0]
        for i in range(args.rounds):
            if i % 2 == 0:
                worker.step(ref_times, ref_cpu)
                ours_times.append(_timed(ours, ours_cpu))
            else:
                ours_times.append(_timed(ours, ours_cpu))
                worker.step(ref_times, ref_cpu)
    finally:
        worker.close()
    result = _pair_stats(ours_times, ref_times, args.batch, ours_cpu, ref_cpu)
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["first_step_s"] = {k: round(v, 2) for k, v in first.items()}
    result["reference_framework"] = worker.framework
    return result


def _last_json(output):
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in output:\n{output[-2000:]}")


def run_subprocess(args):
    ref_cmd = [
        sys.executable,
        args.reference,
        "--arch",
        args.backbone,
        "--image_size",
        str(args.image_size),
        "--batch",
        str(args.batch),
        "--dim",
        str(args.dim),
        "--pred_dim",
        str(args.pred_dim),
        "--projector_layers",
        str(args.projector_layers),
        "--device",
        args.device,
        "--precision",
        args.ref_precision,
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
    ]
    if args.channels_last:
        ref_cmd.append("--channels_last")
    if args.compile:
        ref_cmd.append("--compile")
    if args.ref_threads:
        ref_cmd += ["--threads", str(args.ref_threads)]
    ours_cmd = [
        sys.executable,
        os.path.join(HERE, "step.py"),
        "--backbone",
        args.backbone,
        "--image_size",
        str(args.image_size),
        "--batch",
        str(args.batch),
        "--precision",
        args.precision,
        "--jit_compile" if args.jit_compile else "--no-jit_compile",
        "--dim",
        str(args.dim),
        "--pred_dim",
        str(args.pred_dim),
        "--projector_layers",
        str(args.projector_layers),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--intra_op_threads",
        str(args.intra_op_threads),
        "--inter_op_threads",
        str(args.inter_op_threads),
        "--small_map_grad",
        args.small_map_grad,
    ]
    ours_med, ref_med = [], []
    runs = []
    for i in range(args.rounds):
        order = [("reference", ref_cmd), ("ours", ours_cmd)]
        if i % 2:
            order.reverse()
        for name, cmd in order:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = _last_json(out)
            (ref_med if name == "reference" else ours_med).append(result["step_s_median"])
            runs.append({"side": name, "step_s_median": result["step_s_median"]})
    result = _pair_stats(ours_med, ref_med, args.batch)
    result["runs"] = runs
    return result


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.serve_reference:
        return serve_reference(args)
    if args.mode == "worker":
        result = run_worker(args, argv)
    elif args.mode == "inprocess":
        result = run_inprocess(args)
    else:
        result = run_subprocess(args)
    result.update(
        bench="compare_reference",
        mode=args.mode,
        backbone=args.backbone,
        image_size=args.image_size,
        batch=args.batch,
        precision=args.precision,
        jit_compile=args.jit_compile,
        small_map_grad=step_bench.resolved_small_map_grad(args),
        ref_precision=args.ref_precision,
        channels_last=args.channels_last,
        compile=args.compile,
        device=args.device,
        warmup=args.warmup,
        rounds=args.rounds,
        environment=step_bench.environment(),
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
