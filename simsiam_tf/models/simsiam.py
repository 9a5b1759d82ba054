"""The SimSiam model: encoder f (backbone + projector), predictor h; the train step every model shares."""

import keras
import tensorflow as tf

from simsiam_tf import losses
from simsiam_tf.evaluation import monitor
from simsiam_tf.models import backbones, heads
from simsiam_tf.models.arguments import ArgumentConfig
from simsiam_tf.training import distribute


class TrainStepModel(keras.Model):
    """A `keras.Model` with the one train step of SimSiam, SimTriplet and PairVerifier.

    A step unpacks the batch, computes the loss on it, adds the layers' regularisation
    losses, divides by the number of replicas (Keras sums the replicas' gradients, and
    each replica's loss is its local mean), scales for mixed precision
    (`optimizer.scale_loss`: the dynamic loss scale under LossScaleOptimizer, whose
    apply() unscales the gradients and skips steps with non-finite ones) and applies the
    gradients. A subclass says only how a batch unpacks and what its loss is:

      unpack_batch(data) -> batch
      batch_loss(batch, training) -> (loss, extras)   (loss: a float32 scalar)
      update_step_metrics(loss, extras) -> {metric name: value}

    `view_transform` (optional, a callable on the batch as the dataset yields it) runs
    first, inside the compiled step: e.g. `augment.device.DeviceViews`, the photometric
    augmentation on the accelerator (`--augment_on=device`).
    """

    view_transform = None

    def train_step(self, data):
        if self.view_transform is not None:
            data = self.view_transform(data)
        batch = self.unpack_batch(data)
        with tf.GradientTape() as tape:
            loss, extras = self.batch_loss(batch, training=True)
            total = loss
            if self.losses:
                total = total + tf.add_n([tf.cast(term, tf.float32) for term in self.losses])
            total = total / tf.distribute.get_strategy().num_replicas_in_sync
            total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        self.optimizer.apply(grads, variables)
        return self.update_step_metrics(loss, extras)

    def test_step(self, data):
        if self.view_transform is not None:
            data = self.view_transform(data)
        loss, extras = self.batch_loss(self.unpack_batch(data), training=False)
        return self.update_step_metrics(loss, extras)


@keras.saving.register_keras_serializable(package="simsiam_tf")
class SimSiam(ArgumentConfig, TrainStepModel):
    """SimSiam (Chen & He, CVPR 2021) around any backbone that maps images to [N, feat_dim].

    `model.fit(dataset)` trains on batches `(x1, x2)` (or `((x1, x2), anything)`) of two
    augmented views of the same images; `model(x)` returns the backbone features.

    Args:
      backbone: a `keras.Model` from images to a feature vector.
      dim: projector output width (and predictor output width).
      pred_dim: predictor bottleneck width.
      projector_layers: 3 for the ImageNet recipe, 2 for the CIFAR recipe.
      projector_hidden_dim: projector hidden width; None (or 0) is the backbone feature
        width, as the reference (the paper's "hidden fc is 2048-d" for ResNet-50).
      stop_gradient: False is the paper's collapse ablation (gradients flow into targets).
      use_predictor: False is the no-predictor ablation (p = z).
      heads_bn: False drops BN from projector and predictor (Table 3a); the older
        spelling of projector_bn="none", predictor_bn="none".
      projector_bn: "all" (the reference, Table 3c), "hidden" (Table 3b) or "none".
      predictor_bn: "hidden" (the reference), "all" (BN on the output too, Table 3d) or "none".
      sync_bn: synchronised BN across replicas in the heads: True, False, or "auto" (on
        when the strategy in scope at construction has more than one replica).

    Example:
        ```python
        import simsiam_tf as st

        encoder = st.build_backbone("resnet18", cifar_stem=True)
        model = st.SimSiam(encoder, dim=2048, pred_dim=512, projector_layers=2)
        model.compile(optimizer=st.CoupledSGD(st.WarmupCosine(0.06, total_steps=1000), weight_decay=5e-4))
        model.fit(views, epochs=1, steps_per_epoch=100)  # views: batches (x1, x2), e.g. st.make_pretrain_dataset
        features = model(images)  # the backbone's features [N, feat_dim]
        ```
    """

    def __init__(
        self,
        backbone,
        dim=2048,
        pred_dim=512,
        projector_layers=3,
        projector_hidden_dim=None,
        stop_gradient=True,
        use_predictor=True,
        heads_bn=True,
        sync_bn="auto",
        projector_bn=None,
        predictor_bn=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.dim = int(dim)
        self.pred_dim = int(pred_dim)
        self.projector_layers = int(projector_layers)
        self.projector_hidden_dim = int(projector_hidden_dim) if projector_hidden_dim else None
        self.stop_gradient = bool(stop_gradient)
        self.use_predictor = bool(use_predictor)
        self.heads_bn = bool(heads_bn)
        self.sync_bn = distribute.resolve_sync_bn(sync_bn, tf.distribute.get_strategy())

        self.projector = heads.build_projector(
            backbones.feature_dim(backbone),
            dim=self.dim,
            hidden_dim=self.projector_hidden_dim,
            num_layers=self.projector_layers,
            use_bn=self.heads_bn,
            sync_bn=self.sync_bn,
            bn=projector_bn,
        )
        self.predictor = (
            heads.build_predictor(self.dim, self.pred_dim, use_bn=self.heads_bn, sync_bn=self.sync_bn, bn=predictor_bn)
            if self.use_predictor
            else None
        )
        # As built: heads_bn=False resolves to "none" (the heads reject a contradicting variant).
        self.projector_bn = heads.resolve_bn(projector_bn, self.heads_bn, "all", "projector")
        self.predictor_bn = heads.resolve_bn(predictor_bn, self.heads_bn, "hidden", "predictor")

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.center_norm_tracker = keras.metrics.Mean(name="center_norm")
        self.residual_norm_tracker = keras.metrics.Mean(name="residual_norm")
        # Backbone and heads are built models already; marking this one built keeps Keras
        # from tracing it before weights are loaded or checkpoints restored.
        self.built = True

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.z_std_tracker,
            self.center_norm_tracker,
            self.residual_norm_tracker,
        ]

    def call(self, x, training=False):
        return self.backbone(x, training=training)

    def encode(self, x, training=False):
        """z = projector(backbone(x))."""
        return self.projector(self.backbone(x, training=training), training=training)

    def forward_views(self, x1, x2, training=False):
        """(p1, p2, z1, z2) for two views; p = z when there is no predictor.

        The views go through the encoder one after the other, never concatenated, so each
        BN layer normalises each view with that view's own batch statistics (as the
        PyTorch reference does).
        """
        z1 = self.encode(x1, training=training)
        z2 = self.encode(x2, training=training)
        if self.predictor is None:
            return z1, z2, z1, z2
        p1 = self.predictor(z1, training=training)
        p2 = self.predictor(z2, training=training)
        return p1, p2, z1, z2

    def loss_from_outputs(self, p1, p2, z1, z2):
        """Symmetric SimSiam loss (float32), with stop-gradient on the targets as configured."""
        return losses.simsiam_loss(p1, p2, z1, z2, stop_gradient=self.stop_gradient)

    # The views a batch holds, and how the error for another structure describes them.
    NUM_VIEWS = 2
    EXPECTED_BATCHES = "SimSiam expects batches (x1, x2) or ((x1, x2), anything) of two views"

    @classmethod
    def unpack_batch(cls, data):
        views = data
        while isinstance(views, (tuple, list)) and views and isinstance(views[0], (tuple, list)):
            views = views[0]
        if not (isinstance(views, (tuple, list)) and len(views) == cls.NUM_VIEWS):
            raise ValueError(f"{cls.EXPECTED_BATCHES}; got {type(data).__name__} {data!r:.200}")
        return views

    def batch_loss(self, batch, training):
        p1, p2, z1, z2 = self.forward_views(*batch, training=training)
        return self.loss_from_outputs(p1, p2, z1, z2), (z1, z2)

    def update_step_metrics(self, loss, extras):
        z1, z2 = extras
        self.loss_tracker.update_state(loss)
        self.z_std_tracker.update_state(0.5 * (monitor.normalized_std(z1) + monitor.normalized_std(z2)))
        center_norm, residual_norm = monitor.center_residual(z1)
        self.center_norm_tracker.update_state(center_norm)
        self.residual_norm_tracker.update_state(residual_norm)
        return {m.name: m.result() for m in self.metrics}
