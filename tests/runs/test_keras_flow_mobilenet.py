"""keras:MobileNetV3Small at 32 px through pretraining, simsiam-linear --init_from, simsiam-export and plain TensorFlow."""

import pytest
from keras_flow import (
    check_the_runs_record_the_backbone_and_the_probe_rebuilds_it,
    check_the_saved_model_loads_with_plain_tensorflow_and_embeds_as_the_package,
    make_flow,
)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    return make_flow(tmp_path_factory, "MobileNetV3Small", train_steps=40)


def test_the_runs_record_the_backbone_and_the_probe_rebuilds_it(flow):
    check_the_runs_record_the_backbone_and_the_probe_rebuilds_it(flow)


def test_the_saved_model_loads_with_plain_tensorflow_and_embeds_as_the_package(flow, tmp_path):
    check_the_saved_model_loads_with_plain_tensorflow_and_embeds_as_the_package(flow, tmp_path)
