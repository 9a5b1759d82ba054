"""A randomized fault campaign on tiny runs of simsiam-pretrain, -linear, -verify and -export.

    python bench/fault_campaign.py --faults 120 --seed 1

Each fault hits a run that is under way, and the run is restarted (often into the next
fault) until it finishes. Faults: SIGKILL and SIGTERM at a uniformly random moment of a
job's life (start-up, a step, a checkpoint write, the evaluation, the export), truncation
or bit flips of a file of the newest checkpoint, deletion of its `.index` or of the
`checkpoint` list, a full disk during the job (RLIMIT_FSIZE), two processes started at
once on one run directory, a NaN in one batch. The runs are `--deterministic`.

After every attempt it checks: no readable checkpoint holds NaN/inf; flags.cfg and
metrics.json parse, and a SavedModel or `.keras` export is whole, or they are absent.
When a run resumes it checks the steps lost (the step the faulted job had reached minus the
step resumed from): at most the checkpoint interval, plus one interval for each damaged
checkpoint in between; 0 after a SIGTERM that ended with exit code 5. At the end of each
run: it finished, and its final checkpoint equals the uninterrupted run's bit for bit.
Prints one table and exits 1 on any failure. Jobs start in processes that loaded
TensorFlow beforehand (bench/fault_worker.py), so the campaign spends its time in the jobs.
"""

import argparse
import collections
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fault_checks import (  # noqa: E402
    Failure,
    check_files,
    damage,
    final_values,
    readable_prefixes,
    same_bits,
)

WORKER = os.path.join(ROOT, "bench", "fault_worker.py")
INTERVAL = 2  # --checkpoint_every_steps of every job
COMMON = ["--verbose=0", "--deterministic", f"--checkpoint_every_steps={INTERVAL}", "--seed=3"]
PRETRAIN = [
    "--dataset=synthetic",
    "--num_train_examples=32",
    "--num_eval_examples=16",
    "--image_size=16",
    "--backbone=small_vgg",
    "--width_multiplier=0.25",
    "--dim=16",
    "--pred_dim=8",
    "--batch_size=8",
    "--base_lr=0.3",
    "--epochs=3",
    "--evaluate=false",
    "--knn_every=0",
    "--export=false",
]
LINEAR = [
    "--dataset=synthetic",
    "--image_size=16",
    "--num_train_examples=32",
    "--num_eval_examples=16",
    "--batch_size=8",
    "--epochs=2",
    "--cache_features=false",
    "--compare_baselines=false",
    "--compare_random_init=false",
]
VERIFY = [
    "--dataset=synthetic",
    "--image_size=16",
    "--num_train_examples=64",
    "--num_eval_examples=64",
    "--embedding_dim=8",
    "--hidden_dim=16",
    "--batch_size=8",
    "--epochs=2",
    "--steps_per_epoch=3",
    "--num_val_pairs=20",
    "--num_eval_pairs=20",
    "--num_trials=5",
]
TRAINING_JOBS = ("pretrain", "linear", "verify")
TOTAL_STEPS = {"pretrain": 12, "linear": 8, "verify": 6}
JOBS = TRAINING_JOBS + ("export",)
PROCESS_FAULTS = ("sigkill", "sigterm", "disk_full", "two_processes", "nan_batch")
DISK_FAULTS = ("truncate", "bit_flip", "delete_index")
KINDS = PROCESS_FAULTS + DISK_FAULTS
FAULTS_PER_RUN = 6
ATTEMPT_TIMEOUT = 300


# --------------------------------------------------------------------------- processes


class Workers:
    """Processes that loaded TensorFlow and wait for their job; two are kept warm ahead of need."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.spare = []
        self.count = 0

    def _start(self):
        self.count += 1
        log = open(os.path.join(self.log_dir, f"worker-{self.count}.log"), "w")
        process = subprocess.Popen(
            [sys.executable, WORKER],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        process.log_path = log.name
        log.close()
        return process

    def take(self):
        process = self.spare.pop(0) if self.spare else self._start()
        while len(self.spare) < 2:  # two warm ones, for two processes started at once
            self.spare.append(self._start())
        if process.stdout.readline().strip() != "ready":
            process.wait()
            raise Failure(f"a worker did not start: {open(process.log_path).read()[-2000:]}")
        return process

    def close(self):
        for process in self.spare:
            process.kill()
            process.wait()


def launch(workers, tool, argv, report, **extra):
    process = workers.take()
    process.stdin.write(json.dumps(dict(tool=tool, argv=argv, report=report, **extra)) + "\n")
    process.stdin.flush()
    process.launched = time.time()
    return process


def finish(process, timeout=ATTEMPT_TIMEOUT):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise Failure(f"a job hung for {timeout} s: {open(process.log_path).read()[-2000:]}") from None
    process.stdout.read()
    return process.returncode


def error_line(process):
    lines = [line for line in open(process.log_path).read().splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else ""


def read_report(path):
    """(start steps, last step reported) of the report file of one attempt."""
    starts, last = [], None
    if os.path.exists(path):
        for line in open(path).read().splitlines():
            word, _, value = line.partition(" ")
            if word == "start":
                starts.append(int(value))
            elif word == "step":
                last = int(value)
    return starts, last


# --------------------------------------------------------------------------- one run under faults


class Run:
    """A run directory of one job, faulted and restarted until it finishes."""

    def __init__(self, job, run_dir, argv, reference, duration, workers, stats):
        self.job, self.run_dir, self.argv = job, run_dir, argv
        self.reference, self.duration, self.workers, self.stats = reference, duration, workers, stats
        self.attempts = 0
        self.progress = 0  # the highest step a job reported done
        self.position = 0  # where the job stands: its last step reported, or where it last resumed
        self.pending = []  # [kind, steps done before the fault, allowed loss] until the next resume
        self.finished = False
        self.absorbed_nan = False  # a NaN batch trained on without a NaN loss: other weights, not compared

    def attempt(self, count=1, **extra):
        self.attempts += 1
        report = os.path.join(self.run_dir + ".reports", f"{self.attempts}.txt")
        os.makedirs(os.path.dirname(report), exist_ok=True)
        processes = [launch(self.workers, self.job, self.argv, report, **extra) for _ in range(count)]
        return processes, report

    def settle(self, processes, report):
        codes = [finish(p) for p in processes]
        starts, last = read_report(report)
        if starts and self.job in TRAINING_JOBS:
            resumed = starts[0]
            for kind, done, allowed in self.pending:
                lost = max(0, done - resumed)
                self.stats[kind]["max_lost"] = max(self.stats[kind]["max_lost"], lost)
                if lost > allowed:
                    raise Failure(f"{self.run_dir}: {kind} lost {lost} steps (allowed {allowed})")
            self.pending = []
            self.position = resumed
        if last is not None:
            self.progress = max(self.progress, last)
            self.position = last
        check_files(self.run_dir, load_export=False)
        if 0 in codes:
            self.finished = True
        return codes

    def fault(self, kind, rng):
        """Injects one fault; returns whether it was injected (a process may end before its signal)."""
        if kind in DISK_FAULTS:
            prefixes = readable_prefixes(self.run_dir)
            step = damage(self.run_dir, kind, rng)
            if step is None:
                return False
            # a restart now resumes at most from the checkpoint before the damaged one
            self.position = min(self.position, int(prefixes[1].rsplit("-", 1)[1]))
            for entry in self.pending:
                entry[2] += INTERVAL  # resuming may now need the checkpoint before the damaged one
            self.pending.append([kind, step, INTERVAL])
            return True
        if kind == "two_processes":
            processes, report = self.attempt(count=2)
            codes = self.settle(processes, report)
            held = [p for p, code in zip(processes, codes) if code == 1 and "in use by pid" in error_line(p)]
            if not (0 in codes or held):
                raise Failure(f"{self.run_dir}: two processes ended with {codes}: {error_line(processes[0])}")
            self.pending.append([kind, self.position, INTERVAL])
            return True
        extra = {}
        if kind == "nan_batch":
            if self.job not in TRAINING_JOBS or self.progress >= TOTAL_STEPS[self.job]:
                return False
            extra["nan_at_step"] = rng.randint(self.progress + 1, TOTAL_STEPS[self.job])
        if kind == "disk_full":
            extra["fsize_limit"] = rng.randint(1_000, 400_000)
        (process,), report = self.attempt(**extra)
        injected = kind in ("nan_batch", "disk_full")
        if kind in ("sigkill", "sigterm"):
            # uniform over the job's life: start-up and what is left of its steps
            left = 1.0 if self.job not in TRAINING_JOBS else max(0.3, 1 - self.position / TOTAL_STEPS[self.job])
            time.sleep(rng.uniform(0.0, self.duration * left))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL if kind == "sigkill" else signal.SIGTERM)
                injected = True
        (code,) = self.settle([process], report)
        message = error_line(process)
        if kind == "sigterm" and injected:
            if code == 5:
                step = int(message.split(" at step ")[1].split(" ")[0])
                self.pending.append([kind, step, 0])  # the step it stopped at, from its message
            elif code not in (0, -signal.SIGTERM):  # -15: before the job set its handler (start-up)
                raise Failure(f"{self.run_dir}: SIGTERM ended the job with {code}: {message}")
            else:
                self.pending.append([kind, self.position, 0])
        elif kind == "nan_batch" and code == 1 and "NaN" not in message:
            raise Failure(f"{self.run_dir}: a NaN batch ended the job with {message!r}")
        elif kind == "nan_batch" and code == 0 and (self.progress >= extra["nan_at_step"]):
            # simsiam-linear: its frozen encoder runs in a graph where TensorFlow's CPU remapper fuses
            # convolution, inference BatchNorm and ReLU into one oneDNN kernel whose ReLU maps NaN to 0,
            # so a NaN image gives zero features and a finite loss (bench/RESULTS.md)
            self.absorbed_nan = True
        elif injected:
            self.pending.append([kind, self.position, INTERVAL])
        return injected

    def complete(self):
        """Restarts until the job finishes (three tries), then checks the result against the uninterrupted run."""
        for _ in range(3):
            if self.finished:
                break
            (process,), report = self.attempt()
            (code,) = self.settle([process], report)
            if code != 0 and not self.finished:
                raise Failure(f"{self.run_dir}: the restart ended with {code}: {error_line(process)}")
        if not self.finished:
            raise Failure(f"{self.run_dir}: did not finish")
        export_dir = os.path.join(self.run_dir, "export") if self.job == "export" else None
        check_files(self.run_dir, export_dir, load_export=export_dir is not None)
        if self.job == "export":
            if not os.path.isdir(os.path.join(export_dir, "saved_model")):
                raise Failure(f"{self.run_dir}: the export finished without a SavedModel")
        elif not self.absorbed_nan:
            same_bits(self.run_dir, self.reference)
            if not os.path.exists(os.path.join(self.run_dir, "metrics.json")):
                raise Failure(f"{self.run_dir}: finished without metrics.json")


# --------------------------------------------------------------------------- the campaign


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def argv_for(job, run_dir, pretrained):
    if job == "pretrain":
        return [f"--model_dir={run_dir}", *PRETRAIN, *COMMON]
    if job == "linear":
        return [f"--model_dir={run_dir}", f"--init_from={pretrained}", *LINEAR, *COMMON]
    if job == "verify":
        return [f"--model_dir={run_dir}", f"--init_from={pretrained}", *VERIFY, *COMMON]
    return [f"--model_dir={run_dir}"]


def references(workers, work, jobs=JOBS):
    """The uninterrupted runs: {job: (final checkpoint values or None, seconds)} and the pretraining run's directory."""
    out = {}
    pretrained = os.path.join(work, "reference-pretrain")
    for job in ("pretrain",) + tuple(j for j in jobs if j != "pretrain"):
        run_dir = pretrained if job == "pretrain" else os.path.join(work, f"reference-{job}")
        if job == "export":
            shutil.copytree(pretrained, run_dir)
            shutil.rmtree(os.path.join(run_dir, "export"), ignore_errors=True)
        started = time.time()
        process = launch(workers, job, argv_for(job, run_dir, pretrained), os.path.join(work, f"reference-{job}.txt"))
        if finish(process) != 0:
            raise Failure(f"the uninterrupted {job} run failed: {open(process.log_path).read()[-3000:]}")
        seconds = time.time() - started
        out[job] = (final_values(run_dir) if job in TRAINING_JOBS else None, seconds)
    return out, pretrained


def campaign(faults, seed, work, jobs=JOBS, log=print):
    rng = random.Random(seed)
    workers = Workers(work)
    stats = collections.defaultdict(lambda: dict(injected=0, survived=0, max_lost=0, seconds=0.0))
    failures = []
    absorbed = []
    try:
        refs, pretrained = references(workers, work, jobs)
        log(
            "uninterrupted runs: "
            + ", ".join(f"{job} {seconds:.1f} s" for job, (_, seconds) in refs.items() if job in jobs)
            + f" (checkpoint every {INTERVAL} steps)"
        )
        done = 0  # faults injected so far
        number = 0
        while done < faults:
            job = jobs[number % len(jobs)]
            number += 1
            run_dir = os.path.join(work, f"run-{number}-{job}")
            if job == "export":
                shutil.copytree(pretrained, run_dir)
                shutil.rmtree(os.path.join(run_dir, "export"), ignore_errors=True)
            run = Run(job, run_dir, argv_for(job, run_dir, pretrained), refs[job][0], refs[job][1], workers, stats)
            injected = []
            try:
                # A fault that finds nothing to hit (the job ended before its signal, one checkpoint
                # only) is drawn again; the run ends with FAULTS_PER_RUN faults or when it finishes.
                for _ in range(3 * FAULTS_PER_RUN):
                    if run.finished or len(injected) == FAULTS_PER_RUN or done == faults:
                        break
                    kinds = [k for k in KINDS if not (k == "nan_batch" and job == "export")]
                    kind = rng.choice(kinds)
                    started = time.time()
                    if run.fault(kind, rng):
                        stats[kind]["injected"] += 1
                        injected.append(kind)
                        done += 1
                    stats[kind]["seconds"] += time.time() - started
                run.complete()
            except Failure as err:
                failures.append(f"{job}, faults {injected}: {err}")
                log(f"FAILED {failures[-1]}")
                continue
            for kind in injected:
                stats[kind]["survived"] += 1
            if run.absorbed_nan:
                absorbed.append(f"run {number} ({job})")
            log(f"run {number} ({job}): {', '.join(injected) or 'no fault'} -> finished after {run.attempts} attempts")
    finally:
        workers.close()
    if absorbed:
        log(
            f"a NaN batch trained on without a NaN loss in {', '.join(absorbed)}: finished, checked, "
            "but not compared bit for bit (it trained on another batch than the uninterrupted run)"
        )
    return stats, failures


def table(stats):
    rows = [("fault", "injected", "survived", "max steps lost", "wall time (s)")]
    for kind in KINDS:
        s = stats.get(kind, dict(injected=0, survived=0, max_lost=0, seconds=0.0))
        lost = "0 (exit 5)" if kind == "sigterm" else str(s["max_lost"])
        if kind == "sigterm" and s["max_lost"]:
            lost = str(s["max_lost"])
        rows.append((kind, str(s["injected"]), str(s["survived"]), lost, f"{s['seconds']:.0f}"))
    total = [stats[k] for k in stats]
    rows.append(
        (
            "all",
            str(sum(s["injected"] for s in total)),
            str(sum(s["survived"] for s in total)),
            str(max([s["max_lost"] for s in total] or [0])),
            f"{sum(s['seconds'] for s in total):.0f}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=120, help="how many faults to inject")
    parser.add_argument("--seed", type=int, default=1, help="seed of the choice of faults and moments")
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="the tools to fault, in turn (comma-separated)")
    args = parser.parse_args(argv)
    jobs = tuple(args.jobs.split(","))
    if not jobs or any(job not in JOBS for job in jobs):
        parser.error(f"--jobs takes tools of {', '.join(JOBS)}")
    work = args.work_dir or tempfile.mkdtemp(prefix="fault-campaign-")
    os.makedirs(work, exist_ok=True)
    started = time.time()
    print(f"fault campaign: --faults {args.faults} --seed {args.seed} on {cpu_name()}; runs in {work}", flush=True)
    try:
        stats, failures = campaign(args.faults, args.seed, work, jobs, log=lambda line: print(line, flush=True))
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(table(stats))
    print(f"{len(failures)} failures; {time.time() - started:.0f} s in all")
    for failure in failures:
        print(f"failure: {failure}")
    if not args.work_dir and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
