"""Export of a job's model at the end of its run: `<model_dir>/export/{saved_model,model.keras}`.

The serving model and the writers are `simsiam_tf.serving.model` (its documentation lists
the signatures). Exporting a finished run directory
(rebuild the model from its flags.cfg, restore the latest checkpoint, export) is the
job `simsiam_tf.runs.export` (`simsiam-export`), beside the jobs whose checkpoints it reads.
"""

import os

from simsiam_tf import config as config_lib
from simsiam_tf.serving.model import export_models

EXPORT_SUBDIR = "export"


def export_after_run(model_dir, kind, encoder, image_size, center_crop, projector=None, classifier=None, verifier=None):
    """What a job calls at its end when `export=True`: writes `<model_dir>/export/`.

    `kind` is "pretrain" (pass the projector), "linear" (pass the classifier, e.g.
    `LinearProbe.classifier`) or "verify" (pass the `PairVerifier`). Returns the export
    directory.
    """
    config_lib.check_choice("kind", kind, config_lib.EXPORT_KINDS)
    name, part = {
        "pretrain": ("projector", projector),
        "linear": ("classifier", classifier),
        "verify": ("verifier", verifier),
    }[kind]
    if part is None:
        raise ValueError(f"a {kind} export needs the {name}")
    return export_models(os.path.join(model_dir, EXPORT_SUBDIR), encoder, image_size, center_crop, **{name: part})
