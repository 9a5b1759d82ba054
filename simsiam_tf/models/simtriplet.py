"""SimTriplet (Liu et al., MICCAI 2021): SimSiam with a third view from a neighbouring sample."""

import keras

from simsiam_tf import losses, models


@keras.saving.register_keras_serializable(package="simsiam_tf")
class SimTriplet(models.SimSiam):
    """SimSiam whose batches are triplets `(x1, x2, x3)` (or `((x1, x2, x3), anything)`).

    x1 and x2 are two augmentations of the same samples, x3 an augmentation of a
    neighbour of each (an adjacent tile of the same whole image; see
    `simsiam_tf.data.tiles.make_triplet_dataset`). The loss is
    `D(p1, z2)/2 + D(p2, z1)/2 + D(p1, z3)/2 + D(p3, z1)/2` with stop-gradient on every z
    (`losses.simtriplet_loss`). Constructor, weights and checkpoints are SimSiam's, so a
    SimTriplet encoder is probed, exported and fine-tuned like a SimSiam one. The
    collapse metrics (`z_std`, ...) are computed on the two views of the anchors, as
    SimSiam's. The constructor's arguments are `SimSiam`'s.
    """

    def forward_triplet(self, x1, x2, x3, training=False):
        """(p1, p2, p3, z1, z2, z3); each view goes through the encoder on its own (own BN statistics)."""
        p1, p2, z1, z2 = self.forward_views(x1, x2, training=training)
        z3 = self.encode(x3, training=training)
        p3 = z3 if self.predictor is None else self.predictor(z3, training=training)
        return p1, p2, p3, z1, z2, z3

    def triplet_loss(self, p1, p2, p3, z1, z2, z3):
        """The SimTriplet loss (float32), stop-gradient on the targets as configured."""
        return losses.simtriplet_loss(p1, p2, p3, z1, z2, z3, stop_gradient=self.stop_gradient)

    NUM_VIEWS = 3
    EXPECTED_BATCHES = (
        "SimTriplet expects batches (x1, x2, x3) or ((x1, x2, x3), anything): two views of each sample and a "
        "view of its neighbour"
    )

    def batch_loss(self, batch, training):
        p1, p2, p3, z1, z2, z3 = self.forward_triplet(*batch, training=training)
        return self.triplet_loss(p1, p2, p3, z1, z2, z3), (z1, z2)
