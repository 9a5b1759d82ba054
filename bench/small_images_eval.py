"""Held-out evaluation of a pretraining recipe on a labelled image set (a `.npz` or class folders).

The protocol (bench/real_digits.py's 28 px mode):

- a stratified split of the whole set, `holdout` of it held out (seed `seed`); with
  `tune=True` the held-out part is not touched and the rest is split again the same way
  (an inner validation part) for choosing the recipe;
- SimSiam pretrains on the training part's images (labels unused), written as PNG class
  folders, with the recipe's flagfile and the given overrides, and exports its model;
- features: the exported SavedModel's `embed` signature on the uint8 images (SimSiam),
  the same encoder at its random initialisation, and the raw pixels;
- logistic regression on standardised features (C by cross-validation on the labelled
  images only), with all training labels and with 10 labels per class (5 draws of the
  labelled images: mean and spread), and kNN (k=20, cosine) with all labels.
"""

import os
import time

import numpy as np

LABELS_PER_CLASS = 10
DRAWS = 5
KNN_K = 20


def load_npz(path):
    """(images uint8 [N, H, W] or [N, H, W, 3], labels int64 [N]) from a `.npz` with `images` and `labels`."""
    with np.load(path) as data:
        missing = [k for k in ("images", "labels") if k not in data]
        if missing:
            raise ValueError(
                f"{path} has no {' or '.join(missing)} array: save it with np.savez(images=..., labels=...)"
            )
        images, labels = data["images"], data["labels"]
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: images must be uint8 in [0, 255], got {images.dtype}")
    return images, labels.astype(np.int64)


def load_folder(path):
    """(images uint8 [N, H, W, 3], labels, class names) from class sub-folders of same-size image files."""
    from PIL import Image

    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not classes:
        raise ValueError(f"{path} has no class sub-folders (<path>/<class>/<image>)")
    images, labels = [], []
    for k, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(path, name))):
            with Image.open(os.path.join(path, name, file)) as image:
                images.append(np.asarray(image.convert("RGB")))
            labels.append(k)
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise ValueError(f"{path}: images of several sizes {sorted(sizes)[:3]}; resize them to one size first")
    return np.stack(images), np.asarray(labels, np.int64), classes


def split(labels, holdout=0.2, seed=0, tune=False):
    """(train indices, evaluation indices, name of the evaluation part), stratified."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=holdout, stratify=labels, random_state=seed)
    name = f"held-out {holdout:.0%} (stratified, seed {seed})"
    if tune:
        train, test = train_test_split(train, test_size=holdout, stratify=labels[train], random_state=seed)
        name = f"inner validation {holdout:.0%} of the other {1 - holdout:.0%} (stratified, seed {seed})"
    return np.sort(train), np.sort(test), name


def _per_class(indices, labels, count):
    """The first `count` of `indices` of each class (a stratified subset for smoke runs)."""
    return np.sort(np.concatenate([indices[labels[indices] == c][:count] for c in np.unique(labels[indices])]))


def rgb(images):
    return np.repeat(images[..., None], 3, axis=-1) if images.ndim == 3 else images


def write_folders(folder, images, labels, train, test):
    """PNG class folders `<folder>/{train,test}/<label>/<index>.png`."""
    from PIL import Image

    for part, indices in (("train", train), ("test", test)):
        for i in indices:
            path = os.path.join(folder, part, str(labels[i]), f"{i:05d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(images[i]).save(path)


def embed_exported(export_dir, images, batch=512):
    """The exported model's `embed` features of uint8 images."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    embed = loaded.signatures["embed"]
    return np.concatenate(
        [
            embed(images=tf.constant(rgb(images[i : i + batch])))["embedding"].numpy()
            for i in range(0, len(images), batch)
        ]
    )


def embed_random_init(config, images, batch=512):
    """Features of the recipe's encoder at its random initialisation (the run's seed), on the same preprocessing."""
    import tensorflow as tf

    from simsiam_tf import builders

    encoder = builders.build_encoder(
        config.model, tf.distribute.get_strategy(), config.runtime.seed, config.data.image_size
    )
    x = rgb(images)
    return np.concatenate(
        [encoder(x[i : i + batch].astype(np.float32) / 255.0, training=False).numpy() for i in range(0, len(x), batch)]
    )


def _logistic(train_x, train_y, test_x, test_y, cs, folds):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    search = LogisticRegressionCV(Cs=cs, cv=folds, max_iter=300, use_legacy_attributes=False).fit(a, train_y)
    model = LogisticRegression(C=float(np.ravel(search.C_)[0]), max_iter=1000).fit(a, train_y)
    return float((model.predict(b) == test_y).mean())


def probe(train_x, train_y, test_x, test_y, seed=0):
    """{probe_10_mean, probe_10_std, probe_10_draws, probe_all, knn}: the protocol's figures for one encoder."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: beside TensorFlow's threads on a few shared cores, more only contend (10x slower).
    with threadpool_limits(1):
        return _probe(train_x, train_y, test_x, test_y, seed)


def _probe(train_x, train_y, test_x, test_y, seed):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(DRAWS):
        picked = np.concatenate(
            [rng.choice(np.flatnonzero(train_y == c), LABELS_PER_CLASS, replace=False) for c in np.unique(train_y)]
        )
        draws.append(_logistic(train_x[picked], train_y[picked], test_x, test_y, [0.001, 0.01, 0.1, 1.0, 10.0], 5))
    knn = KNeighborsClassifier(n_neighbors=KNN_K, metric="cosine", weights="distance").fit(train_x, train_y)
    return {
        "probe_10_mean": float(np.mean(draws)),
        "probe_10_std": float(np.std(draws)),
        "probe_10_draws": [round(d, 4) for d in draws],
        "probe_all": _logistic(train_x, train_y, test_x, test_y, [0.01, 0.1, 1.0], 3),
        "knn": float((knn.predict(test_x) == test_y).mean()),
    }


def pretrain(recipe_path, data_dir, run_dir, overrides=None, quick=False):
    """Runs the recipe (with `overrides`, {flag name: value string}) on `data_dir`; (config, metrics)."""
    from simsiam_tf import config as config_lib
    from simsiam_tf.config import flags as config_flags
    from simsiam_tf.runs import pretrain as pretrain_run

    values = config_flags.read_flags_file(recipe_path)
    known = config_flags.flag_fields(config_lib.PretrainConfig)
    unknown = sorted(n for n in overrides or {} if n not in known and n.removeprefix("no") not in known)
    if unknown:
        # The flagfile reader skips names it does not know; an override must not vanish so.
        raise ValueError(f"--set names no simsiam-pretrain flag: {', '.join(unknown)}")
    values.update(overrides or {})
    config = config_flags.config_from_flags(config_lib.PretrainConfig, values)
    changes = {
        "data.dataset": "folder",
        "data.data_dir": data_dir,
        "runtime.model_dir": run_dir,
        "runtime.verbose": 2,
        "evaluate": False,
        "export": True,
        "knn_every": 0,
    }
    if quick:
        changes.update({"train_steps": 2, "model.width_multiplier": 0.125, "data.num_train_examples": 64})
    config = config_lib.replace(config, **changes)
    started = time.time()
    metrics = pretrain_run.run(config)
    metrics["wall_seconds"] = round(time.time() - started, 1)
    return config, metrics


def evaluate(images, labels, recipe_path, out, overrides=None, holdout=0.2, seed=0, tune=False, quick=False):
    """The whole protocol; a dict with the split's name, each encoder's figures and the timings."""
    train, test, part = split(labels, holdout, seed, tune)
    if quick:
        train, test = _per_class(train, labels, 20), _per_class(test, labels, 10)
    data_dir = os.path.join(out, "images")
    started = time.time()
    if not os.path.isdir(os.path.join(data_dir, "test")):
        write_folders(data_dir, images, labels, train, test)
    config, metrics = pretrain(recipe_path, data_dir, os.path.join(out, "pretrain"), overrides, quick)
    train_y, test_y = labels[train], labels[test]
    features = {
        "simsiam": (
            embed_exported(metrics["export_dir"], images[train]),
            embed_exported(metrics["export_dir"], images[test]),
        ),
        "random_init": (embed_random_init(config, images[train]), embed_random_init(config, images[test])),
        "pixels": tuple(images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0 for idx in (train, test)),
    }
    results = {name: probe(a, train_y, b, test_y, seed) for name, (a, b) in features.items()}
    return {
        "part": part,
        "num_train": int(len(train)),
        "num_test": int(len(test)),
        "pretrain_seconds": metrics.get("train_seconds"),
        "pretrain_wall_seconds": metrics["wall_seconds"],
        "steps": metrics.get("step"),
        "feature_dim": int(features["simsiam"][0].shape[1]),
        "results": results,
        "total_seconds": round(time.time() - started, 1),
    }


ROWS = (("simsiam", "SimSiam"), ("random_init", "random init, same encoder"), ("pixels", "raw pixels (standardised)"))


def table(report, title):
    lines = [
        f"| {title} ({report['num_test']} images, {report['part']}) | logistic, 10 labels/class (5 draws) "
        "| logistic, all labels | kNN-20 (cosine), all labels |",
        "|---|---:|---:|---:|",
    ]
    for key, name in ROWS:
        r = report["results"][key]
        lines.append(
            f"| {name} | {r['probe_10_mean']:.3f} ± {r['probe_10_std']:.3f} | {r['probe_all']:.3f} | {r['knn']:.3f} |"
        )
    return "\n".join(lines)
