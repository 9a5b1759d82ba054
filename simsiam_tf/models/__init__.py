"""The networks: backbones, heads, SimSiam and the train step it shares, SimTriplet, the pair verifier, classifiers.

- `backbones`: ResNet-18/34/50 with ImageNet and CIFAR stems (`build_backbone`).
- `heads`: projector, predictor, pair-verification heads.
- `simsiam`: `TrainStepModel` (the one train step) and `SimSiam`.
- `classifiers`: `LinearProbe` (frozen encoder) and `FineTunedClassifier`.
- `arguments`: `get_config`/`from_config` from the constructor's arguments, for every model.
- `simtriplet`: `SimTriplet` (SimSiam plus a triplet term on neighbouring tiles).
- `verifier`: `PairVerifier` (the Siamese twin that scores pairs of images).

The losses are `simsiam_tf.losses`.
"""

from simsiam_tf.models.classifiers import FineTunedClassifier, LinearProbe
from simsiam_tf.models.simsiam import SimSiam, TrainStepModel

__all__ = ["FineTunedClassifier", "LinearProbe", "SimSiam", "TrainStepModel"]
