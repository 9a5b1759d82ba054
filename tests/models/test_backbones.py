import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.models import backbones


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


@pytest.mark.parametrize(
    "arch, params, dim",
    [("resnet18", 11_176_512, 512), ("resnet34", 21_284_672, 512), ("resnet50", 23_508_032, 2048)],
)
def test_parameter_count_matches_torchvision_without_fc(arch, params, dim):
    model = backbones.build_backbone(arch)
    assert _trainable_count(model) == params
    assert backbones.feature_dim(model) == dim
    # Moving statistics exist but are not trainable.
    assert model.non_trainable_weights
    assert all("moving" in w.path for w in model.non_trainable_weights)


@pytest.mark.parametrize("cifar_stem, layer1_size, layer4_size", [(True, 32, 4), (False, 8, 1)])
def test_stems_at_32px(cifar_stem, layer1_size, layer4_size):
    model = backbones.build_backbone("resnet18", cifar_stem=cifar_stem, width_multiplier=0.125, input_shape=(32, 32, 3))
    assert model.get_layer("layer1_1_out").output.shape == (None, layer1_size, layer1_size, 8)
    assert model.get_layer("layer4_1_out").output.shape == (None, layer4_size, layer4_size, 64)
    assert model(_images(2, 32)).shape == (2, 64)
    layer_names = {layer.name for layer in model.layers}
    assert ("stem_pool" in layer_names) is not cifar_stem
    assert model.get_layer("stem_conv").kernel.shape == ((3, 3, 3, 8) if cifar_stem else (7, 7, 3, 8))


def test_resnet50_bottleneck_shapes():
    model = backbones.build_backbone("resnet50", cifar_stem=True, width_multiplier=0.125)
    assert model(_images(2, 16)).shape == (2, 256)
    # v1.5: the stride sits on the 3x3 conv, the 1x1 convs keep stride 1.
    assert model.get_layer("layer2_0_conv1").strides == (1, 1)
    assert model.get_layer("layer2_0_conv2").strides == (2, 2)
    assert model.get_layer("layer2_0_downsample_conv").strides == (2, 2)
    assert model.get_layer("layer1_0_conv3").filters == 32
    # layer1 of a bottleneck ResNet widens 8 -> 32 channels, so it has a projection shortcut.
    assert "layer1_0_downsample_conv" in {layer.name for layer in model.layers}


def test_any_image_size_through_one_model():
    model = backbones.build_backbone("resnet18", width_multiplier=0.125)
    assert model.input_shape == (None, None, None, 3)
    assert model(_images(2, 24)).shape == (2, 64)
    assert model(_images(3, 40, seed=1)).shape == (3, 64)


def test_strided_padding_matches_pytorch():
    """Stem conv pads 3 on every side and the max-pool pads with -inf (PyTorch semantics)."""
    model = backbones.build_backbone("resnet18", width_multiplier=0.125, input_shape=(32, 32, 3))
    x = _images(2, 32)
    conv = model.get_layer("stem_conv")
    normalized = (x - np.array(backbones.IMAGENET_MEAN)) / np.array(backbones.IMAGENET_STD)
    expected_conv = tf.nn.conv2d(
        normalized.astype(np.float32), conv.kernel, strides=2, padding=[[0, 0], [3, 3], [3, 3], [0, 0]]
    )
    probe = keras.Model(
        model.input, [conv.output, model.get_layer("stem_relu").output, model.get_layer("stem_pool").output]
    )
    conv_out, relu_out, pool_out = probe(x)
    np.testing.assert_allclose(conv_out, expected_conv, atol=1e-4)
    padded = tf.pad(relu_out, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    expected_pool = tf.nn.max_pool2d(padded, 3, 2, "VALID")
    np.testing.assert_allclose(pool_out, expected_pool)
    assert pool_out.shape == (2, 8, 8, 8)


@pytest.mark.parametrize("arch, last_bn", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual(arch, last_bn):
    model = backbones.build_backbone(arch, cifar_stem=True, width_multiplier=0.125)
    last = [l for l in model.layers if l.name.endswith("_" + last_bn)]
    assert len(last) == (8 if arch == "resnet18" else 16)
    for layer in last:
        np.testing.assert_array_equal(layer.gamma.numpy(), 0.0)
    for name in ("stem_bn", "layer1_0_bn1", "layer2_0_downsample_bn"):
        np.testing.assert_array_equal(model.get_layer(name).gamma.numpy(), 1.0)

    plain = backbones.build_backbone(arch, cifar_stem=True, width_multiplier=0.125, zero_init_residual=False)
    for layer in plain.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(layer.gamma.numpy(), 1.0)


def test_conv_and_bn_settings():
    model = backbones.build_backbone("resnet18", sync_bn=True, width_multiplier=0.25)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(convs) == len(bns) == 20  # stem + 16 block convs + 3 downsample convs
    for conv in convs:
        assert not conv.use_bias
        init = conv.kernel_initializer.get_config()
        assert (init["scale"], init["mode"], init["distribution"]) == (2.0, "fan_out", "untruncated_normal")
    for bn in bns:
        assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
        assert bn.synchronized
    # He-normal fan_out: std = sqrt(2 / (k * k * out_channels)).
    kernel = model.get_layer("stem_conv").kernel.numpy()
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / (7 * 7 * 16)), rel=0.1)
    # Each conv draws its own values (no shared unseeded initializer).
    assert not np.allclose(
        model.get_layer("layer1_0_conv1").kernel.numpy(), model.get_layer("layer1_0_conv2").kernel.numpy()
    )


def test_normalization_layer():
    layer = backbones.ImageNormalization()
    mean_image = np.broadcast_to(np.array(backbones.IMAGENET_MEAN, np.float32), (1, 2, 2, 3))
    np.testing.assert_allclose(layer(mean_image), 0.0, atol=1e-6)
    one_std = mean_image + np.array(backbones.IMAGENET_STD, np.float32)
    np.testing.assert_allclose(layer(one_std), 1.0, atol=1e-5)
    assert not layer.weights
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, backbones.ImageNormalization)
    assert clone.mean == backbones.IMAGENET_MEAN and clone.std == backbones.IMAGENET_STD


def test_luma_normalization_sees_each_pixels_grayscale_in_every_channel():
    """Oracle: PIL's "L" conversion weights in NumPy, then the per-channel normalisation."""
    images = np.random.default_rng(1).random((2, 3, 4, 3)).astype(np.float32)
    layer = backbones.ImageNormalization(luma=True)
    luma = images @ np.array([0.299, 0.587, 0.114], np.float32)
    want = (luma[..., None] - np.array(backbones.IMAGENET_MEAN)) / np.array(backbones.IMAGENET_STD)
    np.testing.assert_allclose(layer(images).numpy(), want, atol=1e-5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.luma is True and not backbones.ImageNormalization().luma


@pytest.mark.parametrize("arch", ["resnet18_cifar", "small_vgg"])
def test_a_luma_encoder_is_the_rgb_encoder_on_grayscale_images(arch):
    images = np.random.default_rng(2).random((3, 16, 16, 3)).astype(np.float32)
    gray = np.repeat((images @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=-1)
    keras.utils.set_random_seed(4)
    luma = backbones.build_backbone(arch, width_multiplier=0.125, input_colour="luma")
    keras.utils.set_random_seed(4)
    rgb = backbones.build_backbone(arch, width_multiplier=0.125)
    np.testing.assert_allclose(luma(images).numpy(), rgb(gray).numpy(), atol=1e-5)
    assert not np.allclose(luma(images).numpy(), rgb(images).numpy(), atol=1e-3)


def test_input_colour_is_refused_where_it_does_not_apply():
    from simsiam_tf import config

    with pytest.raises(ValueError, match="input_colour must be one of rgb, luma; got 'gray'"):
        backbones.build_backbone("small_vgg", input_colour="gray")
    with pytest.raises(ValueError, match="input_colour=luma applies to the package's encoders"):
        backbones.build_backbone("keras:MobileNetV3Small", input_shape=(32, 32, 3), input_colour="luma")
    with pytest.raises(ValueError, match="backbone=keras:MobileNetV3Small takes images as its own preprocessing"):
        config.ModelConfig(backbone="keras:MobileNetV3Small", input_colour="luma").validate()


def test_parse_backbone_name():
    assert backbones.parse_backbone_name("resnet18") == ("resnet18", False)
    assert backbones.parse_backbone_name("resnet34_cifar") == ("resnet34", True)
    assert backbones.parse_backbone_name("resnet50") == ("resnet50", False)
    for bad in ("resnet101", "resnet18_imagenet", "ResNet18", "", "_cifar"):
        with pytest.raises(ValueError, match="resnet50_cifar"):
            backbones.parse_backbone_name(bad)
    with pytest.raises(ValueError, match="resnet18"):
        backbones.build_backbone("vgg16")


def test_resnet_by_name():
    model = backbones.resnet("resnet18_cifar", width_multiplier=0.125)
    assert model.name == "resnet18_cifar"
    assert "stem_pool" not in {layer.name for layer in model.layers}
    assert backbones.feature_dim(model) == 64


def test_width_multiplier_shrinks_model():
    assert backbones.stage_widths(1.0) == [64, 128, 256, 512]
    assert backbones.stage_widths(0.25) == [16, 32, 64, 128]
    assert backbones.stage_widths(0.0625) == [8, 8, 16, 32]  # floor of 8 channels
    counts = [
        _trainable_count(backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=w))
        for w in (0.125, 0.25, 0.5)
    ]
    assert counts[0] < counts[1] < counts[2] < 11_176_512
    half = backbones.build_backbone("resnet18", width_multiplier=0.5)
    assert backbones.feature_dim(half) == 256
    with pytest.raises(ValueError):
        backbones.build_backbone("resnet18", width_multiplier=0)


def test_mixed_precision_output_is_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.get_layer("stem_conv").kernel.dtype == "float32"
    out = model(_images(2, 16))
    assert out.dtype == tf.float32
    assert np.all(np.isfinite(out.numpy()))


def test_feature_dim_of_other_models():
    flat = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten()])
    assert backbones.feature_dim(flat) == 48

    class Pooled(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(5)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    pooled = Pooled()
    with pytest.raises(ValueError, match="call the model"):
        backbones.feature_dim(pooled)
    pooled(_images(1, 4))
    assert backbones.feature_dim(pooled) == 5

    spatial = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1)])
    with pytest.raises(ValueError, match="feat_dim"):
        backbones.feature_dim(spatial)


@pytest.mark.parametrize("kernel_size,stride,padding,size", [(3, 1, "same", 4), (3, 2, "valid", 9), (3, 1, "same", 8)])
def test_small_map_filter_gradient_equals_the_keras_one(kernel_size, stride, padding, size):
    """The forward-convolution form of the filter gradient (16-bit, small maps, CPU) changes no result."""
    rng = np.random.default_rng(0)
    x = tf.cast(rng.standard_normal((4, size, size, 8)).astype(np.float32), tf.bfloat16)
    convs = [
        backbones.Conv2D(16, kernel_size, strides=stride, padding=padding, use_bias=False, small_map_grad=flag)
        for flag in (True, False)
    ]
    for conv in convs:
        conv.build(x.shape)
    convs[1].kernel.assign(convs[0].kernel)
    assert convs[0]._use_small_map_grad(x) and not convs[1]._use_small_map_grad(x)

    def grads(conv):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv.convolution_op(x, tf.cast(conv.kernel, tf.bfloat16))
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        return [g.numpy().astype(np.float32) for g in tape.gradient(loss, [x, conv.kernel])]

    (dx, dw), (dx_ref, dw_ref) = grads(convs[0]), grads(convs[1])
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_allclose(dw, dw_ref, rtol=0, atol=1e-2 * np.abs(dw_ref).max())
    assert backbones.Conv2D.from_config(convs[0].get_config()).small_map_grad


_ZEN3_CPUINFO = (
    "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fma avx avx2\n"
)
_ZEN4_CPUINFO = (
    "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9B14\n"
    "flags\t\t: fma avx avx2 avx512f avx512_bf16\n"
)


def _fake_host(monkeypatch, cpuinfo, environ=None):
    from simsiam_tf.training import cpu

    info = cpu.describe(cpuinfo, environ=environ or {}, machine="x86_64", threads=2)
    monkeypatch.setattr(cpu, "host", lambda: info)
    return info


@pytest.mark.parametrize(
    "cpuinfo, environ, dtype, expected",
    [
        # bfloat16: measured faster with native kernels and with emulated ones alike.
        (_ZEN4_CPUINFO, {}, "bfloat16", True),
        (_ZEN4_CPUINFO, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "bfloat16", True),
        (_ZEN3_CPUINFO, {}, "bfloat16", True),
        (_ZEN3_CPUINFO, {}, "float16", True),
        # float32: measured slower on every kind.
        (_ZEN4_CPUINFO, {}, "float32", False),
        (_ZEN3_CPUINFO, {}, "float32", False),
        (_ZEN4_CPUINFO, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "float32", False),
    ],
)
def test_small_map_grad_default_per_dtype_on_each_cpu_kind(monkeypatch, cpuinfo, environ, dtype, expected):
    _fake_host(monkeypatch, cpuinfo, environ)
    assert backbones.small_map_grad_by_default(dtype) is expected
    conv = backbones.Conv2D(8, 3, padding="same", use_bias=False)
    x = tf.zeros((2, 4, 4, 8), dtype)
    conv.build(x.shape)
    assert conv._use_small_map_grad(x) is expected
    # Larger maps keep the backward-weights kernel whatever the dtype.
    assert not conv._use_small_map_grad(tf.zeros((2, 16, 16, 8), dtype))


def test_small_map_grad_override_beats_the_default():
    x = tf.zeros((2, 4, 4, 8), tf.bfloat16)
    x32 = tf.zeros((2, 4, 4, 8), tf.float32)
    forced_on = backbones.Conv2D(8, 3, padding="same", small_map_grad=True)
    forced_off = backbones.Conv2D(8, 3, padding="same", small_map_grad=False)
    for conv in (forced_on, forced_off):
        conv.build(x.shape)
    assert forced_on._use_small_map_grad(x32) and not forced_off._use_small_map_grad(x)
    # Where the rewrite cannot apply, forcing it changes nothing: 1x1 kernels, large maps.
    assert not backbones.Conv2D(8, 1, small_map_grad=True)._use_small_map_grad(x)
    assert not backbones.Conv2D(8, 3, padding="same", small_map_grad=True)._use_small_map_grad(
        tf.zeros((2, 16, 16, 8), tf.bfloat16)
    )
    config = backbones.Conv2D(8, 3).get_config()
    assert config["small_map_grad"] is None
    assert backbones.Conv2D.from_config(config).small_map_grad is None


def test_forced_small_map_filter_gradient_in_float32_equals_the_keras_one():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((4, 8, 8, 8)).astype(np.float32))
    convs = [backbones.Conv2D(16, 3, padding="same", use_bias=False, small_map_grad=f) for f in (True, False)]
    for conv in convs:
        conv.build(x.shape)
    convs[1].kernel.assign(convs[0].kernel)
    assert convs[0]._use_small_map_grad(x) and not convs[1]._use_small_map_grad(x)

    def grads(conv):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(conv.convolution_op(x, conv.kernel)))
        return [g.numpy() for g in tape.gradient(loss, [x, conv.kernel])]

    (dx, dw), (dx_ref, dw_ref) = grads(convs[0]), grads(convs[1])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4 * np.abs(dw_ref).max())


def test_mixed_bfloat16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, caplog):
    from simsiam_tf.training import distribute

    _fake_host(monkeypatch, _ZEN3_CPUINFO)
    monkeypatch.setattr(distribute, "_warned_emulated", set())
    monkeypatch.setattr(distribute, "_on_accelerator", lambda: False)
    try:
        with caplog.at_level("WARNING"):
            for _ in range(2):
                distribute.set_precision("mixed_bfloat16")
                backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    warnings = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == 1
    assert "AMD EPYC 7B13" in warnings[0] and "--precision=float32" in warnings[0]


def test_mixed_bfloat16_on_a_cpu_with_native_bf16_does_not_warn(monkeypatch, caplog):
    from simsiam_tf.training import distribute

    _fake_host(monkeypatch, _ZEN4_CPUINFO)
    monkeypatch.setattr(distribute, "_warned_emulated", set())
    monkeypatch.setattr(distribute, "_on_accelerator", lambda: False)
    try:
        with caplog.at_level("WARNING"):
            distribute.set_precision("mixed_bfloat16")
            backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not [r for r in caplog.records if "emulated" in r.getMessage()]


def test_mixed_float16_on_a_cpu_points_at_float32(monkeypatch, caplog):
    from simsiam_tf.training import distribute

    _fake_host(monkeypatch, _ZEN4_CPUINFO)
    monkeypatch.setattr(distribute, "_warned_emulated", set())
    monkeypatch.setattr(distribute, "_on_accelerator", lambda: False)
    try:
        with caplog.at_level("WARNING"):
            distribute.set_precision("mixed_float16")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    warnings = [r.getMessage() for r in caplog.records if "float16" in r.getMessage()]
    assert len(warnings) == 1 and "emulated" in warnings[0] and "--precision=float32" in warnings[0]
