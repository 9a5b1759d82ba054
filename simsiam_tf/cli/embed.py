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

from simsiam_tf import config as config_lib  # noqa: E402

main, run_main = common.tool(config_lib.EmbedConfig, "embed", __doc__)

if __name__ == "__main__":
    run_main()
