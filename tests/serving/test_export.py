"""SavedModel / .keras export: signatures served by TensorFlow alone, run directories, the CLI.

One module fixture makes three tiny run directories (pretrain, linear, verify) whose
flags.cfg come from the tools' own --dry_run and whose checkpoints hold weights that
differ from a fresh build, exports them (the pretrain run through simsiam-export), and
then serves every signature in a separate Python process that cannot import
simsiam_tf.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment, builders, models, serving
from simsiam_tf import config as config_lib
from simsiam_tf.config import flags as config_flags
from simsiam_tf.errors import RunError
from simsiam_tf.runs import export as export_job
from simsiam_tf.serving import export
from simsiam_tf.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--backbone=resnet18_cifar", "--width_multiplier=0.125", "--verbose=0"]
PRE_SIZE, LIN_SIZE, VER_SIZE = 16, 72, 16  # 72 > 64: the linear run centre-crops
NUM_CLASSES = 7
IMAGES_MESSAGE = "images must be [batch, height, width, 3]"

# Serves the exports with TensorFlow only: simsiam_tf cannot be imported.
SERVE = r"""
import json, sys
import numpy as np

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "simsiam_tf":
            raise ImportError("blocked: " + name)

sys.meta_path.insert(0, Block())
import tensorflow as tf

jobs = json.load(open(sys.argv[1]))
report = {"errors": {}, "signatures": {}}
outputs = {}
for export_dir, calls in jobs.items():
    loaded = tf.saved_model.load(export_dir)
    report["signatures"][export_dir] = sorted(loaded.signatures)
    for key, signature, inputs in calls:
        fn = loaded.signatures[signature]
        try:
            result = fn(**{name: tf.constant(np.load(path)) for name, path in inputs.items()})
        except tf.errors.InvalidArgumentError as err:
            report["errors"][key] = err.message
            continue
        for name, value in result.items():
            outputs[key + "/" + name] = value.numpy()
np.savez(sys.argv[2], **outputs)
try:
    import simsiam_tf
    report["simsiam_tf"] = "importable"
except ImportError:
    report["simsiam_tf"] = "blocked"
report["loaded_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "simsiam_tf")
json.dump(report, open(sys.argv[3], "w"))
"""


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def _tool(module, *args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", f"simsiam_tf.cli.{module}", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _write_flags(model_dir, module, *args):
    """flags.cfg as the tool writes it: its --dry_run prints exactly that text."""
    code, out, err = _finish(_tool(module, "--dry_run", f"--model_dir={model_dir}", *args))
    assert code == 0, err[-2000:]
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "flags.cfg"), "w") as f:
        f.write(out)
    return config_flags.read_flags_file(os.path.join(model_dir, "flags.cfg"))


def _scramble(model, rng):
    """Moves BatchNorm statistics and scales off their initial values, as training would."""
    for v in model.variables:
        name = v.path.split("/")[-1]
        if name in ("moving_variance", "gamma"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        elif name in ("moving_mean", "beta"):
            v.assign(rng.normal(0.0, 0.1, v.shape).astype(np.float32))


def _reference(images, size, center_crop):
    """The training job's evaluation preprocessing, grayscale repeated to RGB."""
    images = np.asarray(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return augment.eval_preprocess(images, size, center_crop)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    pre, lin, ver = (str(base / name) for name in ("pre", "lin", "ver"))
    empty = str(base / "empty")
    os.makedirs(empty)
    strategy = tf.distribute.get_strategy()

    pre_flags = _write_flags(
        pre,
        "pretrain",
        *TINY,
        f"--image_size={PRE_SIZE}",
        "--dim=16",
        "--pred_dim=8",
        "--projector_layers=2",
        "--nouse_predictor",
    )
    lin_flags = _write_flags(
        lin, "linear", *TINY, f"--image_size={LIN_SIZE}", f"--init_from={pre}", "--nocache_features"
    )
    ver_flags = _write_flags(
        ver, "verify", *TINY, f"--image_size={VER_SIZE}", "--head=classifier", "--embedding_dim=8", "--hidden_dim=16"
    )

    # Checkpoints whose weights a rebuild (seed 0) cannot reproduce without restoring them.
    pre_config = config_flags.config_from_flags(config_lib.PretrainConfig, pre_flags)
    simsiam = builders.build_model(config_lib.replace(pre_config, **{"runtime.seed": 11}), strategy)
    _scramble(simsiam, rng)
    checkpoints.RunCheckpoint(pre, model=simsiam).save(5)

    lin_config = config_flags.config_from_flags(config_lib.LinearConfig, lin_flags)
    probe = models.LinearProbe(builders.build_encoder(lin_config.model, strategy, 12), NUM_CLASSES)
    _scramble(probe, rng)
    probe.classifier.kernel.assign(rng.normal(0, 1, probe.classifier.kernel.shape).astype(np.float32))
    checkpoints.RunCheckpoint(lin, model=probe).save(3)

    ver_config = config_flags.config_from_flags(config_lib.VerifyConfig, ver_flags)
    encoder = builders.build_encoder(ver_config.model, strategy, 13)
    pair_verifier = builders.build_verifier(ver_config, encoder, strategy)
    _scramble(pair_verifier, rng)

    images = {
        "u8": rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8),  # not the training size
        "f32": rng.random((2, 16, 16, 3), dtype=np.float32),
        "gray": rng.integers(0, 256, (2, 30, 18, 1), dtype=np.uint8),
        "one": rng.integers(0, 256, (1, PRE_SIZE, PRE_SIZE, 3), dtype=np.uint8),  # the training size
        "big": rng.integers(0, 256, (2, 90, 80, 3), dtype=np.uint8),
        "rank3": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
        "two_channels": rng.integers(0, 256, (2, 20, 24, 2), dtype=np.uint8),
        "a": rng.integers(0, 256, (6, 20, 20, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (6, 24, 18, 3), dtype=np.uint8),
    }
    for name in ("big", "a", "b"):
        images[name + "_f32"] = images[name].astype(np.float32) / 255.0
    images["u8_as_255_f32"] = images["u8"].astype(np.float32)  # 0-255 floats: the wrong signature
    # The calibrated threshold: the median score, so that both decisions occur.
    scores = pair_verifier.score(_reference(images["a"], VER_SIZE, False), _reference(images["b"], VER_SIZE, False))
    pair_verifier.set_threshold(float(np.median(scores.numpy())))
    checkpoints.RunCheckpoint(ver, model=pair_verifier).save(4)

    # simsiam-export on the pretrain run, and the CLI's error and dry-run paths, in the
    # background while the other two runs export here.
    dry_dir = str(base / "dry")
    procs = {
        "export": _tool("export", f"--model_dir={pre}"),
        "empty": _tool("export", f"--model_dir={empty}"),
        "dry": _tool("export", f"--model_dir={lin}", f"--output_dir={dry_dir}", "--dry_run"),
    }
    try:
        lin_out = export_job.export_run(lin)
        ver_out = export_job.export_run(ver)
        cli = {name: _finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert cli["export"][0] == 0, cli["export"][2][-3000:]
    pre_out = os.path.join(pre, "export")

    paths = {}
    for name, array in images.items():
        paths[name] = str(base / f"{name}.npy")
        np.save(paths[name], array)
    saved = lambda d: os.path.join(d, serving.SAVED_MODEL_NAME)  # noqa: E731
    jobs = {
        saved(pre_out): [
            ("pre/embed_u8", "embed", {"images": paths["u8"]}),
            ("pre/default_u8", "serving_default", {"images": paths["u8"]}),
            ("pre/embed_f32", "embed_float", {"images": paths["f32"]}),
            ("pre/embed_gray", "embed", {"images": paths["gray"]}),
            ("pre/embed_one", "embed", {"images": paths["one"]}),
            ("pre/project_u8", "project", {"images": paths["u8"]}),
            ("pre/project_f32", "project_float", {"images": paths["f32"]}),
            ("pre/rank3", "embed", {"images": paths["rank3"]}),
            ("pre/two_channels", "project", {"images": paths["two_channels"]}),
            ("pre/embed_255_f32", "embed_float", {"images": paths["u8_as_255_f32"]}),
        ],
        saved(lin_out): [
            ("lin/classify_big", "classify", {"images": paths["big"]}),
            ("lin/classify_u8", "classify", {"images": paths["u8"]}),
            ("lin/classify_big_f32", "classify_float", {"images": paths["big_f32"]}),
            ("lin/embed_big", "embed", {"images": paths["big"]}),
        ],
        saved(ver_out): [
            ("ver/verify", "verify", {"images1": paths["a"], "images2": paths["b"]}),
            ("ver/verify_f32", "verify_float", {"images1": paths["a_f32"], "images2": paths["b_f32"]}),
            ("ver/mismatch", "verify", {"images1": paths["a"], "images2": paths["u8"]}),
            ("ver/bad_second", "verify", {"images1": paths["a"], "images2": paths["two_channels"]}),
            ("ver/second_255_f32", "verify_float", {"images1": paths["a_f32"], "images2": paths["u8_as_255_f32"]}),
        ],
    }
    jobs_path, outputs_path, report_path = (str(base / n) for n in ("jobs.json", "outputs.npz", "report.json"))
    with open(jobs_path, "w") as f:
        json.dump(jobs, f)
    serve = subprocess.Popen(
        [sys.executable, "-c", SERVE, jobs_path, outputs_path, report_path],
        cwd=str(base),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    show = subprocess.Popen(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir", saved(pre_out)],
        cwd=str(base),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = _finish(serve)
    assert code == 0, err[-3000:]
    with open(report_path) as f:
        report = json.load(f)
    served = dict(np.load(outputs_path))
    show_code, show_out, show_err = _finish(show)
    assert show_code == 0, show_err[-2000:]
    return dict(
        pre=pre,
        lin=lin,
        ver=ver,
        empty=empty,
        dry_dir=dry_dir,
        outputs={"pre": pre_out, "lin": lin_out, "ver": ver_out},
        simsiam=simsiam,
        probe=probe,
        verifier=pair_verifier,
        images=images,
        served=served,
        report=report,
        cli=cli,
        show=show_out,
    )


def test_saved_model_cli_lists_the_signatures(env):
    show = env["show"]
    for name in ("serving_default", "embed", "embed_float", "project", "project_float"):
        assert f"signature_def['{name}']" in show
    assert "DT_UINT8" in show and "DT_FLOAT" in show
    assert "outputs['embedding']" in show and "outputs['projection']" in show


def test_each_export_has_its_signatures(env):
    signatures = {
        os.path.basename(os.path.dirname(os.path.dirname(path))): set(names)
        for path, names in env["report"]["signatures"].items()
    }
    base = {"serving_default", "embed", "embed_float"}
    assert signatures == {
        "pre": base | {"project", "project_float"},
        "lin": base | {"classify", "classify_float"},
        "ver": base | {"verify", "verify_float"},
    }


def test_served_by_tensorflow_alone(env):
    report = env["report"]
    assert report["simsiam_tf"] == "blocked"
    assert report["loaded_modules"] == []


def test_embed_and_project_equal_keras_outputs(env):
    served, images, simsiam = env["served"], env["images"], env["simsiam"]
    for key, name in (("u8", "u8"), ("f32", "f32"), ("gray", "gray"), ("one", "one")):
        x = _reference(images[name], PRE_SIZE, False)
        features = simsiam.backbone(x, training=False).numpy()
        np.testing.assert_allclose(served[f"pre/embed_{key}/embedding"], features, atol=1e-5, rtol=1e-5)
        if key in ("u8", "f32"):
            projection = simsiam.projector(features, training=False).numpy()
            np.testing.assert_allclose(served[f"pre/project_{key}/projection"], projection, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(served["pre/default_u8/embedding"], served["pre/embed_u8/embedding"])
    assert served["pre/embed_u8/embedding"].shape == (3, simsiam.backbone.output_shape[-1])


def test_classify_equals_the_linear_probe(env):
    served, images, probe = env["served"], env["images"], env["probe"]
    for name in ("big", "u8", "big_f32"):
        logits = probe(_reference(images[name], LIN_SIZE, True)).numpy()
        np.testing.assert_allclose(served[f"lin/classify_{name}/logits"], logits, atol=1e-5, rtol=1e-5)
        probabilities = served[f"lin/classify_{name}/probabilities"]
        np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=1e-6)
        np.testing.assert_array_equal(served[f"lin/classify_{name}/top5"], np.argsort(-logits, axis=1)[:, :5])
    features = probe.encoder(_reference(images["big"], LIN_SIZE, True)).numpy()
    np.testing.assert_allclose(served["lin/embed_big/embedding"], features, atol=1e-5, rtol=1e-5)


def test_verify_uses_the_calibrated_threshold(env):
    served, images, pair_verifier = env["served"], env["images"], env["verifier"]
    scores = pair_verifier.score(_reference(images["a"], VER_SIZE, False), _reference(images["b"], VER_SIZE, False))
    np.testing.assert_allclose(served["ver/verify/score"], scores.numpy(), atol=1e-5, rtol=1e-5)
    threshold = float(pair_verifier.threshold.numpy())
    same = served["ver/verify/same"]
    np.testing.assert_array_equal(same, served["ver/verify/score"] >= threshold)
    assert 0 < same.sum() < len(same)
    np.testing.assert_allclose(served["ver/verify_f32/score"], served["ver/verify/score"], atol=1e-5)
    np.testing.assert_array_equal(served["ver/verify_f32/same"], same)


def test_bad_inputs_fail_with_a_clear_message(env):
    errors = env["report"]["errors"]
    assert set(errors) == {
        "pre/rank3",
        "pre/two_channels",
        "ver/mismatch",
        "ver/bad_second",
        "pre/embed_255_f32",
        "ver/second_255_f32",
    }
    assert "images of a _float signature must lie in [0, 1]" in errors["pre/embed_255_f32"]
    assert "use embed for uint8 images" in errors["pre/embed_255_f32"]
    assert "images2 of a _float signature must lie in [0, 1]" in errors["ver/second_255_f32"]
    assert IMAGES_MESSAGE in errors["pre/rank3"] and "[20 24 3]" in errors["pre/rank3"]
    assert IMAGES_MESSAGE in errors["pre/two_channels"] and "[2 20 24 2]" in errors["pre/two_channels"]
    assert "images2 must be [batch, height, width, 3]" in errors["ver/bad_second"]
    assert "images1 and images2 must hold the same number of images" in errors["ver/mismatch"]


def test_keras_file_loads_and_gives_the_same_outputs(env):
    images = env["images"]
    pre = serving.load_keras_model(os.path.join(env["outputs"]["pre"], serving.KERAS_NAME))
    assert isinstance(pre, serving.ServingModel) and pre.kind == "pretrain"
    x = images["u8"]
    out = pre(x)
    features = env["simsiam"].backbone(_reference(x, PRE_SIZE, False)).numpy()
    np.testing.assert_allclose(out["embedding"].numpy(), features, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["projection"].numpy(), env["served"]["pre/project_u8/projection"], atol=1e-5)

    ver = serving.load_keras_model(os.path.join(env["outputs"]["ver"], serving.KERAS_NAME))
    assert ver.encoder is ver.verifier.backbone
    result = ver.verify(images["a"], images["b"])
    np.testing.assert_allclose(result["score"].numpy(), env["served"]["ver/verify/score"], atol=1e-5)
    np.testing.assert_array_equal(result["same"].numpy(), env["served"]["ver/verify/same"])


def test_cli_export_and_dry_run(env):
    code, out, _ = env["cli"]["export"]
    assert code == 0 and "exported the pretrain run" in out
    assert sorted(os.listdir(env["outputs"]["pre"])) == [
        serving.model.ENCODER_WEIGHTS_NAME,
        serving.KERAS_NAME,
        serving.SAVED_MODEL_NAME,
    ]
    code, out, _ = env["cli"]["dry"]
    assert code == 0 and "would export the linear run" in out and "centre crop on" in out
    assert not os.path.exists(env["dry_dir"])


def test_no_checkpoint_is_a_clear_error(env):
    code, _, err = env["cli"]["empty"]
    assert code == 1
    assert "no checkpoint" in err and env["empty"] in err
    with pytest.raises(RunError, match="no checkpoint in .*empty"):
        export_job.export_run(env["empty"])


def test_flags_files_give_back_the_configs(env):
    kinds = {}
    for name in ("pre", "lin", "ver"):
        values = config_flags.read_flags_file(os.path.join(env[name], "flags.cfg"))
        kinds[name] = config_flags.detect_kind(values)
    assert kinds == {"pre": "pretrain", "lin": "linear", "ver": "verify"}
    pre = config_flags.config_from_flags(
        config_lib.PretrainConfig, config_flags.read_flags_file(os.path.join(env["pre"], "flags.cfg"))
    )
    assert pre.model.use_predictor is False and pre.model.dim == 16 and pre.data.image_size == PRE_SIZE
    assert pre.augment.crop_scale == (0.2, 1.0) and pre.runtime.tpu is None
    lin = config_flags.config_from_flags(
        config_lib.LinearConfig, config_flags.read_flags_file(os.path.join(env["lin"], "flags.cfg"))
    )
    assert lin.cache_features is False and lin.init_from == env["pre"] and lin.crop_scale == (0.08, 1.0)


def test_unknown_flags_and_missing_heads_are_refused(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text("--backbone=resnet18\n--no_such_flag=3\n")
    with pytest.raises(RunError, match="no_such_flag"):
        config_flags.detect_kind(config_flags.read_flags_file(str(path)))
    path.write_text("--image_size=big\n")
    with pytest.raises(RunError, match="--image_size=big is not a valid int"):
        config_flags.config_from_flags(config_lib.PretrainConfig, config_flags.read_flags_file(str(path)))
    encoder = builders.build_encoder(
        config_lib.ModelConfig(backbone="resnet18_cifar", width_multiplier=0.125), tf.distribute.get_strategy(), 0
    )
    with pytest.raises(ValueError, match="a linear export needs the classifier"):
        export.export_after_run(str(tmp_path), "linear", encoder, 16, False)
    assert not os.path.exists(tmp_path / export.EXPORT_SUBDIR)


def test_float_images_outside_0_1_are_refused_with_the_fix():
    ok = np.full((1, 4, 4, 3), 1.0, np.float32)
    np.testing.assert_array_equal(serving.check_float_range(tf.constant(ok)).numpy(), ok)
    for bad in (ok * 255, -ok, ok * np.nan):
        with pytest.raises(tf.errors.InvalidArgumentError, match="must lie in \\[0, 1\\].*use embed for uint8"):
            serving.check_float_range(tf.constant(bad))
    u8 = tf.constant(np.full((1, 4, 4, 3), 255, np.uint8))
    assert serving.check_float_range(u8) is u8
