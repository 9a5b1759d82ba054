"""The embedding job: a trained encoder and a set of images in, embeddings.npz (and neighbours, duplicates,
projector files) out.

The encoder is a run directory's (rebuilt from its flags.cfg and latest checkpoint,
`runs.export.rebuild`) or an exported SavedModel's `embed` signature; both see the
evaluation preprocessing of the run (`augment.eval_preprocess`), so they give the same
vectors. The images are any `data.load_source` split; a folder without split
sub-folders gives its held-out part when the config carries the run's hold-out.
"""

import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import config as config_lib
from simsiam_tf import data
from simsiam_tf.builders import holdout_spec
from simsiam_tf.config import flags as config_flags
from simsiam_tf.data import image_files, label_budget
from simsiam_tf.errors import RunError
from simsiam_tf.evaluation import embedding_files as embed_files
from simsiam_tf.evaluation.neighbours import NeighbourIndex
from simsiam_tf.runs import export as export_job
from simsiam_tf.runs import heldout, rundir
from simsiam_tf.training.files import write_json_atomic


def run_data_config(run_dir):
    """The `DataConfig` of the images the run at `run_dir` trained and evaluated on (from its flags.cfg)."""
    path = config_flags.find_run_flags(run_dir)
    if path is None:
        raise RunError(f"{run_dir!r} has no {config_flags.FLAGS_FILE}: give a run directory of simsiam-pretrain")
    values = config_flags.read_flags_file(path)
    run_config = config_flags.config_from_flags(config_flags.CONFIGS[config_flags.detect_kind(values)], values)
    return config_lib.DataConfig(**{f: getattr(run_config.data, f) for f in config_lib.EmbedConfig.RUN_DATA_FIELDS})


class RunEncoder:
    """The encoder of a run directory, with the run's evaluation preprocessing."""

    def __init__(self, run_dir):
        info = export_job.inspect_run(run_dir)
        self.checkpoint, parts = export_job.rebuild(info)
        self.encoder = parts["encoder"]
        self.image_size, self.center_crop = info.image_size, info.center_crop
        self.description = f"the {info.kind} run {run_dir} ({self.checkpoint})"
        self._call = tf.function(lambda x: self.encoder(x, training=False), reduce_retracing=True)

    def batches(self, source, batch_size):
        """(features float32 [b, D], labels int64 [b]) of each batch of `source`, in order."""
        dataset = data.make_eval_dataset(source, batch_size, self.image_size, center_crop=self.center_crop)
        for images, labels in dataset:
            yield np.asarray(self._call(images), np.float32), labels.numpy()


class SavedModelEncoder:
    """The `embed` signature of an exported SavedModel (uint8 images of any size, preprocessing in the graph)."""

    def __init__(self, path):
        if not os.path.isdir(path):
            raise RunError(f"SavedModel directory {path!r} does not exist")
        try:
            self._loaded = tf.saved_model.load(path)
        except (OSError, ValueError, tf.errors.OpError) as err:
            raise RunError(f"cannot load a SavedModel from {path!r}: {err}") from None
        if "embed" not in self._loaded.signatures:
            raise RunError(
                f"the SavedModel {path!r} has no 'embed' signature (it has {', '.join(self._loaded.signatures)}): "
                "export it with simsiam-export"
            )
        self._embed = self._loaded.signatures["embed"]
        self.checkpoint = None
        self.description = f"the SavedModel {path}"

    def batches(self, source, batch_size):
        # Images of differing sizes cannot share a batch; the signature resizes each one.
        batched = source.dataset.batch(batch_size if source.image_shape is not None else 1)
        for images, labels in batched.prefetch(data.AUTOTUNE):
            yield self._embed(images=images)["embedding"].numpy().astype(np.float32), labels.numpy()


class Progress:
    """A Keras progress bar on a terminal; elsewhere (a log file) one line every `every` batches."""

    def __init__(self, total, every, stream=None):
        import keras

        self.stream = stream or sys.stdout
        self.total, self.every = total, every
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = keras.utils.Progbar(total, unit_name="image") if self.tty else None
        self.started = time.time()
        self.batches = 0

    def update(self, done):
        self.batches += 1
        if self.bar is not None:
            self.bar.update(min(done, self.total))
        elif self.batches % self.every == 0 or done >= self.total:
            seconds = time.time() - self.started
            print(
                f"embedded {done}/{self.total} images ({100.0 * done / max(self.total, 1):.0f}%), "
                f"{seconds:.1f} s, {done / max(seconds, 1e-9):.0f} images/s",
                file=self.stream,
                flush=True,
            )


def load_encoder(config):
    return RunEncoder(config.init_from) if config.init_from else SavedModelEncoder(config.saved_model)


def load_images(config):
    """The `Source` of the images to embed: `config.embed_split` (the hold-out part where the config has one);
    split "all": every image of a folder (TFDS: of every split). `data.num_eval_examples` limits the count."""
    d, split = config.data, config.embed_split
    try:
        return data.load_source(
            d.dataset,
            split=split,
            data_dir=d.data_dir,
            image_size=d.image_size,
            seed=config.runtime.seed,
            num_examples=d.num_eval_examples,
            on_corrupt=d.on_corrupt,
            max_image_pixels=d.max_image_pixels,
            label_splits=(d.train_split, d.eval_split),
            holdout=None if split == config_lib.ALL_SPLIT else holdout_spec(d, split),
        )
    except ValueError as err:
        raise RunError(str(err)) from None


def source_paths(source, data_dir, split):
    """Each image's name: its path relative to `data_dir` (folders), else "split/index"."""
    if source.name == "folder" and source.random_access:
        root = os.path.abspath(data_dir)
        return [os.path.relpath(os.path.abspath(p.decode("utf-8")), root) for p in np.asarray(source.records[0])]
    return [f"{split}/{i}" for i in range(source.num_examples)]


def embed_source(encoder, source, batch_size, every=20, stream=None):
    """(embeddings float32 [N, D], labels int64 [N]) of every image of `source`, with progress output."""
    progress = Progress(source.num_examples, every, stream)
    features, labels = [], []
    done = 0
    for x, y in encoder.batches(source, batch_size):
        features.append(x)
        labels.append(y)
        done += x.shape[0]
        progress.update(done)
    if not features:
        raise RunError("there are no images to embed")
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def images_at(source, indices):
    """{index: uint8 image} of the images of `source` at `indices`."""
    indices = np.unique(np.asarray(indices, np.int64))
    subset = label_budget.subset_source(source, indices)
    return {int(i): image for i, (image, _) in zip(indices, subset.dataset.as_numpy_iterator())}


def label_agreement(labels, indices):
    """Mean fraction of each labelled query's neighbours that share its label (precision at k); None unlabelled."""
    labels = np.asarray(labels)
    labelled = labels >= 0
    if not labelled.any():
        return None
    same = labels[indices[labelled]] == labels[labelled][:, None]
    return float(same.mean())


def query_positions(num_images, num_queries):
    """`num_queries` positions spread evenly over the images (the contact sheet's rows)."""
    return np.unique(np.linspace(0, num_images - 1, min(num_queries, num_images)).round().astype(np.int64))


def run(config, flags_text=None):
    """Embeds `config`'s images with its encoder and writes the files into `config.runtime.model_dir`.

    Returns the metrics written to metrics.json. Raises `RunError` for bad input
    (no such run or SavedModel, no images, a hold-out that differs from the run's).
    """
    config.validate()
    with rundir.RunStart(config.runtime.model_dir, flags_text) as start:
        return _run(config, start)


def _run(config, start):
    out_dir = config.runtime.model_dir
    encoder = load_encoder(config)
    source = load_images(config)
    if config.init_from:
        heldout.check_recorded(source, config.init_from)
    if config.neighbours and config.neighbours >= source.num_examples:
        raise RunError(
            f"--neighbours={config.neighbours} needs more images than the {source.num_examples} to embed: lower it"
        )
    start.started()
    split = config.embed_split
    what = f"{source.num_examples} images of {config.data.dataset} split {split!r}"
    if source.name == "folder" and not os.path.isdir(os.path.join(config.data.data_dir, split)):
        what = f"{source.num_examples} images of {config.data.data_dir}"
    if source.holdout is not None:
        what += f" (the held-out part: {source.holdout.summary()})"
    print(f"embedding {what} with {encoder.description}", flush=True)

    started = time.time()
    embeddings, labels = embed_source(encoder, source, config.batch_size, config.log_every_batches)
    seconds = time.time() - started
    paths = source_paths(source, config.data.data_dir, split)
    files = [
        embed_files.write_embeddings(
            os.path.join(out_dir, embed_files.EMBEDDINGS_NAME), embeddings, paths, labels, source.class_names
        )
    ]
    metrics = {
        "encoder": config.init_from or config.saved_model,
        "checkpoint": encoder.checkpoint,
        "dataset": config.data.dataset,
        "split": split,
        "num_images": int(embeddings.shape[0]),
        "dim": int(embeddings.shape[1]),
        "embed_seconds": round(seconds, 2),
        "images_per_second": round(embeddings.shape[0] / max(seconds, 1e-9), 1),
    }
    metrics.update(heldout.metrics_entry(source))
    metrics.update(image_files.skipped_entry(images=source))
    index = NeighbourIndex(embeddings) if (config.neighbours or config.duplicates is not None) else None
    if config.neighbours:
        metrics.update(_neighbours(config, index, source, paths, labels, files))
    if config.duplicates is not None:
        pairs, sims = index.pairs_above(config.duplicates)
        files.append(
            embed_files.write_duplicates_csv(os.path.join(out_dir, embed_files.DUPLICATES_NAME), paths, pairs, sims)
        )
        metrics.update(duplicates_threshold=config.duplicates, num_duplicate_pairs=int(len(pairs)))
    if config.projector:
        metrics.update(_projector(config, source, embeddings, paths, labels))
        files.append(os.path.join(out_dir, embed_files.PROJECTOR_DIR))
    metrics["files"] = [os.path.relpath(f, out_dir) for f in files]
    write_json_atomic(os.path.join(out_dir, "metrics.json"), metrics)
    return metrics


def _neighbours(config, index, source, paths, labels, files):
    out_dir, k = config.runtime.model_dir, config.neighbours
    started = time.time()
    indices, sims = index.neighbours_of_all(k)
    out = {"neighbours": k, "neighbour_seconds": round(time.time() - started, 2)}
    files.append(
        embed_files.write_neighbours_csv(os.path.join(out_dir, embed_files.NEIGHBOURS_NAME), paths, indices, sims)
    )
    queries = query_positions(len(paths), config.num_queries)
    images = images_at(source, np.concatenate([queries, indices[queries].reshape(-1)]))
    files.append(
        embed_files.write_contact_sheet(
            os.path.join(out_dir, embed_files.CONTACT_SHEET_NAME), images, queries, indices[queries], sims[queries]
        )
    )
    agreement = label_agreement(labels, indices)
    if agreement is not None:
        out[f"neighbour_label_agreement_at_{k}"] = round(agreement, 4)
    return out


def _projector(config, source, embeddings, paths, labels):
    directory = os.path.join(config.runtime.model_dir, embed_files.PROJECTOR_DIR)
    n = min(len(paths), config.projector_max_images)
    if n < len(paths):
        logging.warning("the projector shows the first %d of %d images (--projector_max_images)", n, len(paths))
    held = images_at(source, np.arange(n))
    side = embed_files.write_projector(
        directory, embeddings[:n], paths[:n], labels[:n], source.class_names, [held[i] for i in range(n)]
    )
    print(f"projector: tensorboard --logdir {directory}", flush=True)
    return {"projector_images": n, "projector_thumbnail": side}


def report(config, metrics):
    """What simsiam-embed prints at the end: the files written and the neighbour and duplicate counts."""
    print(f"\n{metrics['num_images']} embeddings of dimension {metrics['dim']} in {config.runtime.model_dir}:")
    print("  " + ", ".join(metrics["files"]))
    key = f"neighbour_label_agreement_at_{metrics.get('neighbours')}"
    if key in metrics:
        print(f"  neighbours sharing the query's label (precision at {metrics['neighbours']}): {metrics[key]:.3f}")
    if "num_duplicate_pairs" in metrics:
        print(f"  {metrics['num_duplicate_pairs']} pairs with cosine >= {metrics['duplicates_threshold']:g}")
