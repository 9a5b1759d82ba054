"""The settings of the tools that run no training: export, embeddings, the tf.data service launcher; and --dry_run."""

import dataclasses
import os
from typing import ClassVar, Optional

from simsiam_tf.config import choices as c
from simsiam_tf.config import sections as s
from simsiam_tf.config.fields import check_settings, section, setting


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Export of a finished run: its SavedModel and `.keras` file.

    `output_dir` None means `<model_dir>/export`; `kind` None means: read it from the
    run's flags.cfg.
    """

    model_dir: str = setting(
        "outputs/demo",
        "Run directory to export (written by simsiam-pretrain, simsiam-linear or simsiam-verify).",
        group="run",
    )
    output_dir: Optional[str] = setting(
        None, "Where to write saved_model/ and model.keras; default <model_dir>/export.", group="run"
    )
    kind: Optional[str] = setting(
        None,
        f"Which job wrote the run: {', '.join(c.EXPORT_KINDS)}, or auto to read it from the run's flags.cfg.",
        group="run",
        choices=c.EXPORT_KINDS,
        none_flag="auto",
    )

    def validate(self):
        if not self.model_dir:
            raise ValueError("model_dir is required: the run directory to export")
        if self.output_dir is not None and not self.output_dir:
            raise ValueError("output_dir is empty: name a directory, or leave it out for <model_dir>/export")
        check_settings(self)
        return self


# The runtime settings simsiam-embed takes (it trains nothing: no strategy, precision or XLA).
EMBED_RUNTIME_FLAGS = ("model_dir", "seed", "verbose")


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """Embeddings of a set of images from a trained encoder, with neighbours, duplicates and projector files.

    The encoder comes from a run directory (`init_from`: simsiam-pretrain, -linear or
    -verify) or an exported SavedModel (`saved_model`). The images are `data`'s `split`
    (None: its eval split); with `data.holdout_fraction` > 0 a folder without split
    sub-folders gives its held-out part, as the run that drew it; split "all" gives all
    of a folder's images. `runtime.model_dir` is where the files go.
    """

    # The data settings that name a run's images: taken from the --init_from run when no data is given.
    RUN_DATA_FIELDS: ClassVar[tuple] = (
        "dataset",
        "data_dir",
        "image_size",
        "train_split",
        "eval_split",
        "on_corrupt",
        "max_image_pixels",
        "holdout_fraction",
        "holdout_seed",
    )
    # The tool takes them (and the seed) from the --init_from run unless --dataset or --data_dir is given.
    INHERITED_FROM_RUN: ClassVar[tuple] = (*RUN_DATA_FIELDS, "seed")
    INHERITED_UNLESS_GIVEN: ClassVar[tuple] = ("dataset", "data_dir")

    runtime: s.RuntimeConfig = section(s.RuntimeConfig(model_dir="outputs/embed"), "run", flags=EMBED_RUNTIME_FLAGS)
    data: s.DataConfig = section(s.DataConfig(holdout_fraction=0.0), "data")
    split: Optional[str] = setting(
        None,
        f"Split to embed (a TFDS split, or a folder's sub-folder; {c.ALL_SPLIT}: every image of the folder); default "
        "--eval_split (a folder without it: all its images, or the run's held-out part when the data comes from "
        "--init_from).",
        group="data",
    )
    init_from: Optional[str] = setting(
        None, "Run directory whose encoder embeds (its latest checkpoint).", group="model"
    )
    saved_model: Optional[str] = setting(
        None, "Or: an exported SavedModel directory (its embed signature).", group="model"
    )
    neighbours: int = setting(
        0, "Write each image's K nearest neighbours (cosine); 0: none.", group="evaluation", low=0
    )
    duplicates: Optional[float] = setting(
        None,
        "Write the pairs of images whose cosine is at least this (e.g. 0.98).",
        group="evaluation",
        low=-1,
        high=1,
        low_open=True,
    )
    projector: bool = setting(
        False, "Write TensorBoard projector files (vectors, metadata, sprite).", group="evaluation"
    )
    num_queries: int = setting(8, "Rows of the neighbours' contact sheet.", group="evaluation", low=1)
    projector_max_images: int = setting(
        10000, "The projector shows at most this many images.", group="evaluation", low=1
    )
    batch_size: int = setting(256, "Images per batch.", group="run", low=1)
    log_every_batches: int = setting(
        20, "When the output is not a terminal: a progress line every this many batches.", group="run", low=1
    )

    @property
    def embed_split(self):
        return self.split or self.data.eval_split

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        check_settings(self)
        if bool(self.init_from) == bool(self.saved_model):
            raise ValueError(
                "give exactly one encoder: init_from (a simsiam-pretrain, -linear or -verify run directory) or "
                "saved_model (an exported SavedModel directory)"
            )
        if self.init_from and os.path.abspath(self.init_from) == os.path.abspath(self.runtime.model_dir):
            raise ValueError(
                f"model_dir {self.runtime.model_dir!r} is the run directory init_from: give the embeddings their own "
                "model_dir (e.g. <run>/embed), or their flags.cfg would replace the run's"
            )
        return self


DEFAULT_PORT = 5050
LOOPBACK = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class DataWorkerConfig:
    """A tf.data service dispatcher (`dispatcher`) or a worker of the one at `dispatcher_address`."""

    DEFAULT_PORT: ClassVar[int] = DEFAULT_PORT

    dispatcher: bool = setting(False, "Run the dispatcher (one per training job) instead of a worker.", group="run")
    dispatcher_address: Optional[str] = setting(
        None, "Worker mode: the dispatcher's HOST:PORT (grpc:// optional).", group="run"
    )
    port: Optional[int] = setting(
        None,
        f"Port to serve on; default {DEFAULT_PORT} for the dispatcher, any free port for a worker.",
        group="run",
        low=0,
        high=65535,
    )
    host: str = setting(
        LOOPBACK,
        "The address the dispatcher and the trainers reach this server at (a worker registers itself under it). "
        "The default, loopback, keeps everything on one machine; give the machine's private-network address for "
        "a fleet.",
        group="run",
    )
    work_dir: Optional[str] = setting(
        None,
        "Dispatcher mode: a directory for its journal, so that a restarted dispatcher recovers its jobs.",
        group="run",
    )
    heartbeat_ms: int = setting(
        1000, "Worker mode: how often the worker asks the dispatcher for new work.", group="run", low=1
    )

    def dispatcher_host_port(self):
        """`dispatcher_address` as HOST:PORT, without the grpc:// scheme."""
        address = self.dispatcher_address
        scheme = c.DATA_SERVICE_SCHEME
        return address[len(scheme) :] if address.startswith(scheme) else address

    def validate(self):
        if self.dispatcher == bool(self.dispatcher_address):
            raise ValueError(
                "give either --dispatcher (run the dispatcher) or --dispatcher_address=HOST:PORT (run a worker)"
            )
        check_settings(self)
        if self.dispatcher_address:
            host, _, port = self.dispatcher_host_port().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"dispatcher_address must be HOST:PORT (e.g. 10.0.0.5:5050), got {self.dispatcher_address!r}"
                )
        return self


@dataclasses.dataclass(frozen=True)
class ToolOptions:
    """Settings of the tool itself rather than of its job (not recorded in flags.cfg)."""

    dry_run: bool = setting(False, "Check the flags, print the resolved flags and exit without running.", group="run")
