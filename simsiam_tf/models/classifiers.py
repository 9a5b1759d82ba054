"""Classifiers on an encoder: the frozen linear probe and the fine-tuned encoder with a linear head."""

import keras

from simsiam_tf.models import backbones
from simsiam_tf.models.arguments import ArgumentConfig


class _EncoderClassifier(ArgumentConfig, keras.Model):
    """An encoder and a linear classifier on its features (weights N(0, 0.01), bias 0)."""

    encoder_trainable = None

    def __init__(self, encoder, num_classes, **kwargs):
        from simsiam_tf.evaluation.probe import build_linear_classifier

        super().__init__(**kwargs)
        encoder.trainable = self.encoder_trainable
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.classifier = build_linear_classifier(self.num_classes, backbones.feature_dim(encoder))
        self.built = True


@keras.saving.register_keras_serializable(package="simsiam_tf")
class LinearProbe(_EncoderClassifier):
    """A frozen encoder and a linear classifier on its features: the paper's linear evaluation.

    The encoder is made non-trainable (in place) and always runs in inference mode, so
    neither its weights nor its BatchNorm moving statistics change while the classifier
    trains: `fit` on `(images, labels)` updates only the classifier (weights N(0, 0.01),
    bias 0). `model(images)` returns float32 logits [N, num_classes].

    Args:
      encoder: a `keras.Model` from images to [N, feat_dim] features, e.g. `SimSiam.backbone`.
      num_classes: number of classes.
    """

    encoder_trainable = False

    def call(self, x, training=False):
        # training=False whatever fit asks for: BatchNorm in training mode would update
        # the encoder's moving statistics, which are part of the frozen model.
        return self.classifier(self.encoder(x, training=False))


@keras.saving.register_keras_serializable(package="simsiam_tf")
class FineTunedClassifier(_EncoderClassifier):
    """An encoder and a linear classifier trained together: the semi-supervised evaluation of SimCLR and BYOL.

    Unlike `LinearProbe`, the encoder stays trainable and runs in the mode `fit` asks for,
    so BatchNorm uses batch statistics (and updates its moving ones) while fine-tuning,
    and inference uses the moving statistics. Same attributes and arguments as
    `LinearProbe` (`encoder`, `classifier`); `model(images)` returns logits.
    """

    encoder_trainable = True

    def call(self, x, training=False):
        return self.classifier(self.encoder(x, training=training))
