"""simsiam-embed: embeddings of your images from a trained encoder, with neighbours, duplicates and projector files.

The encoder: --init_from=<run directory> (simsiam-pretrain, -linear or -verify) or
--saved_model=<exported SavedModel directory>. The images: a folder (--dataset=folder
--data_dir=DIR, class sub-folders or flat), a TFDS split (--dataset=NAME --split=SPLIT),
or, with --init_from and no --dataset/--data_dir, the run's own data: its eval split,
which for a folder without train/ and test/ is the run's held-out part.

Writes into --model_dir: embeddings.npz (`embeddings` float32 [N, D], `paths` relative to
--data_dir or "split/index", `labels` (-1 where none), `class_names`), flags.cfg and
metrics.json; with --neighbours=K neighbours.csv (query_path, rank, neighbour_path,
similarity: cosine) and neighbours.png (a contact sheet of --num_queries queries beside
their K neighbours); with --duplicates=T duplicates.csv (the pairs of cosine >= T); with
--projector a projector/ folder for `tensorboard --logdir <model_dir>/projector`.
The neighbour search is exact and blockwise (simsiam_tf.NeighbourIndex in Python).

Exit codes: 0 done, 1 failed (message says why), 2 invalid flags.
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from absl import flags  # noqa: E402

from simsiam_tf import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS

# What names a run's images, taken from the --init_from run when neither --dataset nor --data_dir is given.
RUN_DATA_FLAGS = (
    "dataset",
    "data_dir",
    "image_size",
    "train_split",
    "eval_split",
    "on_corrupt",
    "holdout_fraction",
    "holdout_seed",
    "seed",
)


def inherit_run_data():
    """Takes the run's data flags from --init_from's flags.cfg when neither --dataset nor --data_dir is given."""
    if not FLAGS.init_from or FLAGS["dataset"].present or FLAGS["data_dir"].present:
        return
    taken = common.inherit_run_flags(FLAGS.init_from, RUN_DATA_FLAGS)
    if taken:
        print(
            f"# from the flags.cfg of {FLAGS.init_from}: " + " ".join(FLAGS[n].serialize() for n in taken), flush=True
        )


def report(config, metrics):
    print(f"\n{metrics['num_images']} embeddings of dimension {metrics['dim']} in {config.runtime.model_dir}:")
    print("  " + ", ".join(metrics["files"]))
    key = f"neighbour_label_agreement_at_{metrics.get('neighbours')}"
    if key in metrics:
        print(f"  neighbours sharing the query's label (precision at {metrics['neighbours']}): {metrics[key]:.3f}")
    if "num_duplicate_pairs" in metrics:
        print(f"  {metrics['num_duplicate_pairs']} pairs with cosine >= {metrics['duplicates_threshold']:g}")


def main(argv):
    return common.run_tool(argv, config_lib.EmbedConfig, "embed", report, prepare=inherit_run_data)


common.define_tool_flags(config_lib.EmbedConfig)


def run_main():
    common.run_main(main, __doc__)


if __name__ == "__main__":
    run_main()
