"""Job configuration: frozen dataclasses, one per job, each setting defined once.

  fields.py       `setting(...)`, `Setting`, `section(...)`: the definition of a setting, and the
                  checks derived from it (`check_settings`, `check_choice`, `check_number`)
  choices.py      the values each choice setting accepts (backbone names included)
  sections.py     RuntimeConfig, DataConfig, ModelConfig, AugmentConfig, and the settings several jobs share
  pretraining.py  PretrainConfig
  evaluation.py   LinearConfig, VerifyConfig
  tools.py        ExportConfig, EmbedConfig, DataWorkerConfig, ToolOptions (--dry_run)
  flags.py        config <-> flags <-> flags.cfg: `tool_flags`, `config_from_flag_values`,
                  `read_flags_file`, `config_from_flags`, `detect_kind`, `model_flags`

Nothing here imports absl or TensorFlow; the tools (simsiam_tf.cli) define their absl
flags from `flags.tool_flags`.

How to add a setting: add one field to the job's dataclass (or to a section), with its
default, help text and constraints in one place:

    jitter_prob: float = probability(0.8, "Probability of colour jitter.")
    knn_k: int = setting(200, "Neighbours for the kNN monitor.", group="evaluation", low=1)
    mode: str = setting("a", "What the mode does.", group="model", choices=("a", "b"))

From that field alone come the absl flag of every tool whose config holds it (`--knn_k`,
its kind read from the type annotation, its default, help and --help group), the check
of its choices and range in `validate()` (with the message "knn_k must be at least 1, got
0"), its line in the run's flags.cfg and its reading back. `group` is the --help heading
(data, augmentation, model, optimisation, evaluation, run; a section's settings take the
section's). Set `defines_variables=True` when a change of the setting changes the
model's variables: a restart with another value is then refused before anything is
built. A setting several jobs share with one meaning is a `Setting` object used as
`SHARED.field(default)` in each (sections.py holds them); a new choice list goes in
choices.py. Only rules between settings are written by hand, in the config's `validate()`.
"""

from simsiam_tf.config.choices import (
    ALL_SPLIT,
    AUGMENT_ON,
    BACKBONE_ARCHS,
    BACKBONE_NAMES,
    CIFAR_SUFFIX,
    COLLAPSE_ACTIONS,
    DATA_SERVICE_SCHEME,
    DISTANCES,
    EXPORT_KINDS,
    LR_SCHEDULES,
    METHODS,
    MININGS,
    NEIGHBOURHOODS,
    ON_BAD_FILE,
    PRECISIONS,
    PREDICTOR_BN,
    PROBE_OPTIMIZERS,
    PROJECTOR_BN,
    PROJECTOR_LAYERS,
    SMALL_BACKBONES,
    STRATEGIES,
    SYNC_BN,
    TILE_DATASETS,
    TILE_PATTERN,
    VERBOSITY,
    VERIFY_AUGMENTS,
    VERIFY_HEADS,
)
from simsiam_tf.config.evaluation import LinearConfig, VerifyConfig, check_label_budget
from simsiam_tf.config.fields import (
    Setting,
    check_choice,
    check_number,
    check_settings,
    probability,
    replace,
    section,
    setting,
)
from simsiam_tf.config.pretraining import PretrainConfig, epochs_for_steps
from simsiam_tf.config.sections import AugmentConfig, DataConfig, ModelConfig, RuntimeConfig
from simsiam_tf.config.tools import DataWorkerConfig, EmbedConfig, ExportConfig, ToolOptions

__all__ = [
    "ALL_SPLIT",
    "AUGMENT_ON",
    "BACKBONE_ARCHS",
    "BACKBONE_NAMES",
    "CIFAR_SUFFIX",
    "COLLAPSE_ACTIONS",
    "DATA_SERVICE_SCHEME",
    "DISTANCES",
    "EXPORT_KINDS",
    "LR_SCHEDULES",
    "METHODS",
    "MININGS",
    "NEIGHBOURHOODS",
    "ON_BAD_FILE",
    "PRECISIONS",
    "PREDICTOR_BN",
    "PROBE_OPTIMIZERS",
    "PROJECTOR_BN",
    "PROJECTOR_LAYERS",
    "STRATEGIES",
    "SMALL_BACKBONES",
    "SYNC_BN",
    "TILE_DATASETS",
    "TILE_PATTERN",
    "VERBOSITY",
    "VERIFY_AUGMENTS",
    "VERIFY_HEADS",
    "AugmentConfig",
    "DataConfig",
    "DataWorkerConfig",
    "EmbedConfig",
    "ExportConfig",
    "LinearConfig",
    "ModelConfig",
    "PretrainConfig",
    "RuntimeConfig",
    "Setting",
    "ToolOptions",
    "VerifyConfig",
    "check_choice",
    "check_label_budget",
    "check_number",
    "check_settings",
    "epochs_for_steps",
    "probability",
    "replace",
    "section",
    "setting",
]
