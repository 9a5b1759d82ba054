"""Pair verification (Siamese twin) heads on a shared encoder, and the `PairVerifier` model.

Both images of a pair go through the same encoder (the backbone, e.g. one pretrained
by SimSiam) and an embedding head. Four heads:

- "contrastive": contrastive loss (Hadsell et al. 2006) on the euclidean distance of
  the embeddings; score = minus that distance.
- "triplet": triplet loss with in-batch semi-hard or batch-hard mining, on the l2,
  squared-l2 or angular distance; score = minus the distance.
- "classifier": a small MLP on [|e1 - e2|, e1 * e2] trained with binary cross-entropy
  (Koch et al. 2015); score = the probability that the pair is the same class.
- "cosine": no head: the embedding is the encoder's feature vector, l2-normalised, and
  score = minus the euclidean distance of the normalised features (so it orders pairs
  as their cosine similarity does). On a frozen encoder nothing is trained: the
  verifier compares the pretrained features as they are, the few-label case where a
  head trained on a handful of classes forgets what separates unseen ones. Unfrozen,
  the contrastive loss trains the encoder itself.

Every score is higher for pairs more likely the same, as `pair_metrics` expects.
"""

import keras
import tensorflow as tf
from keras import layers

from simsiam_tf import losses, models
from simsiam_tf.config import DISTANCES, MININGS, VERIFY_HEADS, check_choice
from simsiam_tf.models import backbones
from simsiam_tf.models.arguments import ArgumentConfig
from simsiam_tf.models.heads import kernel_init

HEADS = VERIFY_HEADS


def build_embedding_head(in_dim, embedding_dim=128, hidden_dim=512, sync_bn=False, name="embedding_head"):
    """[N, in_dim] -> [N, embedding_dim]: Dense(hidden, no bias) - BN - ReLU - Dense(embedding_dim)."""
    return keras.Sequential(
        [
            keras.Input(shape=(in_dim,), name=f"{name}_input"),
            layers.Dense(hidden_dim, use_bias=False, kernel_initializer=kernel_init(), name=f"{name}_fc1"),
            layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_bn1"),
            layers.ReLU(name=f"{name}_relu1"),
            layers.Dense(embedding_dim, kernel_initializer=kernel_init(), name=f"{name}_fc2"),
        ],
        name=name,
    )


def build_pair_classifier(embedding_dim, hidden_dim=512, name="pair_classifier"):
    """[N, 2 * embedding_dim] ([|e1 - e2|, e1 * e2]) -> [N, 1] same-class logit: Dense - ReLU - Dense."""
    return keras.Sequential(
        [
            keras.Input(shape=(2 * embedding_dim,), name=f"{name}_input"),
            layers.Dense(hidden_dim, activation="relu", kernel_initializer=kernel_init(), name=f"{name}_fc1"),
            layers.Dense(1, kernel_initializer=kernel_init(), name=f"{name}_logit", dtype="float32"),
        ],
        name=name,
    )


def pair_distance(e1, e2, distance="l2"):
    """Row-wise distance of two embedding batches `[N, D]` -> `[N]` (float32).

    l2: euclidean (with 1e-12 under the square root, so identical embeddings keep a
    finite gradient); squared_l2: its square; angular: 1 - cosine similarity.
    """
    e1 = tf.cast(e1, tf.float32)
    e2 = tf.cast(e2, tf.float32)
    if distance == "angular":
        cos = tf.reduce_sum(tf.math.l2_normalize(e1, axis=-1) * tf.math.l2_normalize(e2, axis=-1), axis=-1)
        return tf.maximum(1.0 - cos, 0.0)
    squared = tf.reduce_sum(tf.square(e1 - e2), axis=-1)
    if distance == "squared_l2":
        return squared
    if distance == "l2":
        return tf.sqrt(squared + 1e-12)
    check_choice("distance", distance, DISTANCES)


def pair_features(e1, e2):
    """The classifier head's input: [|e1 - e2|, e1 * e2] (symmetric in the two images)."""
    return tf.concat([tf.abs(e1 - e2), e1 * e2], axis=-1)


@keras.saving.register_keras_serializable(package="simsiam_tf")
class PairVerifier(ArgumentConfig, models.TrainStepModel):
    """A Siamese twin verifier: shared encoder + embedding head + one of `HEADS`.

    Training batches: `((x1, x2), labels)` (labels 1 = same class) for the contrastive
    and classifier heads; `((anchor, positive, negative), (anchor_class, negative_class))`
    for the triplet head (mined in the batch of all 3B embeddings), as
    `data.pairs.make_pair_dataset` / `data.pairs.make_class_triplet_dataset` give.

    `score(x1, x2)` (higher = more likely the same), `verify(x1, x2)` (score >=
    `threshold`), `embed(x)`. `model((x1, x2))` is `score`, `model(x)` is `embed`.
    `threshold` is a non-trainable variable, saved with the weights, set from
    validation pairs by `set_threshold`.

    Args:
      backbone: a `keras.Model` from images to `[N, feat_dim]` (a SimSiam backbone).
      head: "contrastive", "triplet", "classifier" or "cosine".
      embedding_dim: width of the embedding head; the cosine head has none (its
        embedding is the encoder's features).
      hidden_dim: hidden width of the embedding head (and of the classifier MLP);
        unused by the cosine head.
      normalize_embeddings: l2-normalise the embeddings (distances then lie in [0, 2]);
        always on for the cosine head.
      margin: contrastive / triplet margin.
      mining: "semi_hard" or "batch_hard" (triplet head).
      distance: "l2", "squared_l2" or "angular" (triplet head; the contrastive loss is
        defined on the euclidean distance).
      freeze_encoder: keep the backbone's weights and BatchNorm statistics fixed.
      threshold: initial decision threshold on the score.
      sync_bn: synchronised BatchNorm in the embedding head.
    """

    def __init__(
        self,
        backbone,
        head="contrastive",
        embedding_dim=128,
        hidden_dim=512,
        normalize_embeddings=True,
        margin=1.0,
        mining="semi_hard",
        distance="l2",
        freeze_encoder=False,
        threshold=0.0,
        sync_bn=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("head", head, HEADS)
        check_choice("mining", mining, MININGS)
        check_choice("distance", distance, DISTANCES)
        if head != "triplet" and distance != "l2":
            raise ValueError(
                f"distance={distance!r} applies to the triplet head; the {head} head works on the euclidean "
                "distance (distance='l2')"
            )
        if embedding_dim < 1 or hidden_dim < 1:
            raise ValueError(f"embedding_dim and hidden_dim must be positive, got {embedding_dim} and {hidden_dim}")
        self.backbone = backbone
        self.head = head
        if head == "cosine":
            embedding_dim, normalize_embeddings = backbones.feature_dim(backbone), True
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.margin = losses.check_margin(margin)
        self.mining = mining
        self.distance = distance
        self.freeze_encoder = bool(freeze_encoder)
        self.sync_bn = bool(sync_bn)
        if self.freeze_encoder:
            self.backbone.trainable = False

        self.embedding_head = (
            None
            if head == "cosine"
            else build_embedding_head(
                backbones.feature_dim(backbone), self.embedding_dim, self.hidden_dim, sync_bn=self.sync_bn
            )
        )
        self.classifier = build_pair_classifier(self.embedding_dim, self.hidden_dim) if head == "classifier" else None
        self.threshold = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(threshold)),
            trainable=False,
            name="threshold",
            dtype="float32",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.gap_tracker = keras.metrics.Mean(name="score_gap")
        # Sub-models are built already; marking this one built keeps Keras from tracing
        # it before weights are loaded or checkpoints restored.
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.gap_tracker]

    # ------------------------------------------------------------------ inference

    def embed(self, x, training=False):
        """Embeddings float32 `[N, embedding_dim]` of images `[N, H, W, 3]` in [0, 1]."""
        features = self.backbone(x, training=training and not self.freeze_encoder)
        if self.embedding_head is not None:
            features = self.embedding_head(features, training=training)
        e = tf.cast(features, tf.float32)
        if self.normalize_embeddings:
            e = tf.math.l2_normalize(e, axis=-1)
        return e

    def _logits(self, e1, e2, training=False):
        return tf.cast(self.classifier(pair_features(e1, e2), training=training), tf.float32)[:, 0]

    def score_embeddings(self, e1, e2):
        """Scores `[N]` of embedding pairs: same-probability (classifier) or minus the distance."""
        e1 = tf.convert_to_tensor(e1, tf.float32)
        e2 = tf.convert_to_tensor(e2, tf.float32)
        if self.head == "classifier":
            return tf.sigmoid(self._logits(e1, e2))
        return -pair_distance(e1, e2, self.distance)

    def score(self, x1, x2):
        """Scores `[N]` of image pairs, higher for pairs more likely the same."""
        return self.score_embeddings(self.embed(x1), self.embed(x2))

    def verify(self, x1, x2):
        """bool `[N]`: score >= threshold."""
        return self.score(x1, x2) >= self.threshold

    def set_threshold(self, value):
        self.threshold.assign(float(value))

    def call(self, inputs, training=False):
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise ValueError(f"PairVerifier takes images x or a pair (x1, x2); got {len(inputs)} inputs")
            return self.score(*inputs)
        return self.embed(inputs, training=training)

    # ------------------------------------------------------------------ training

    def unpack_batch(self, data):
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (tuple, list))):
            raise ValueError(self._format_message(data))
        inputs, targets = data
        if self.head == "triplet":
            if len(inputs) != 3 or not (isinstance(targets, (tuple, list)) and len(targets) == 2):
                raise ValueError(self._format_message(data))
        elif len(inputs) != 2:
            raise ValueError(self._format_message(data))
        return tuple(inputs), targets

    def _format_message(self, data):
        expected = (
            "((anchor, positive, negative), (anchor_class, negative_class))"
            if self.head == "triplet"
            else "((x1, x2), labels) with labels 1 = same class"
        )
        return f"the {self.head} head trains on batches {expected}; got {type(data).__name__} {data!r:.200}"

    def batch_loss(self, batch, training):
        """(loss, mean score of positive pairs - mean score of negative pairs) of one batch."""
        inputs, targets = batch
        n = tf.shape(inputs[0])[0]
        # One pass over all images: BatchNorm sees one batch of the pair's distribution.
        e = self.embed(tf.concat(inputs, axis=0), training=training)
        if self.head == "triplet":
            anchor_class, negative_class = targets
            anchor_class = tf.reshape(tf.cast(anchor_class, tf.int64), [-1])
            negative_class = tf.reshape(tf.cast(negative_class, tf.int64), [-1])
            labels = tf.concat([anchor_class, anchor_class, negative_class], axis=0)
            loss = losses.triplet_loss(labels, e, self.margin, self.mining, self.distance)
            ea, ep, en = e[:n], e[n : 2 * n], e[2 * n :]
            gap = tf.reduce_mean(self.score_embeddings(ea, ep)) - tf.reduce_mean(self.score_embeddings(ea, en))
            return loss, gap
        y = tf.reshape(tf.cast(targets, tf.float32), [-1])
        e1, e2 = e[:n], e[n:]
        if self.head == "classifier":
            logits = self._logits(e1, e2, training=training)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
            scores = tf.sigmoid(logits)
        else:
            d = pair_distance(e1, e2, "l2")
            loss = tf.reduce_mean(losses.contrastive_loss(y, d, self.margin))
            scores = -d
        positives = tf.reduce_sum(y)
        negatives = tf.reduce_sum(1.0 - y)
        gap = tf.math.divide_no_nan(tf.reduce_sum(scores * y), positives) - tf.math.divide_no_nan(
            tf.reduce_sum(scores * (1.0 - y)), negatives
        )
        return loss, gap

    def update_step_metrics(self, loss, gap):
        self.loss_tracker.update_state(loss)
        self.gap_tracker.update_state(gap)
        return {m.name: m.result() for m in self.metrics}
