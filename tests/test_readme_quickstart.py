"""The README's Python quick start runs as written, on a tiny folder of PNGs (paths and sizes rewritten)."""

import os
import re

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- quickstart: tests/test_readme_quickstart.py runs this block -->"
NUM_FILES = 20


def quickstart_block():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert text.count(MARKER) == 1, "the README lost its quick-start marker"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S)
    return match.group(1)


def _rewrite(code, old, new):
    assert code.count(old) == 1, f"the README quick start no longer contains {old!r}"
    return code.replace(old, new)


def test_readme_quickstart_runs_on_a_folder_of_pngs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "my_images"
    folder.mkdir()
    for i in range(NUM_FILES):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    code = quickstart_block()
    code = _rewrite(
        code,
        'folder, size, batch, epochs = "my_images", 32, 64, 20',
        f"folder, size, batch, epochs = {str(folder)!r}, 16, 8, 2",
    )
    code = _rewrite(code, "width_multiplier=0.25", "width_multiplier=0.125")
    code = _rewrite(code, "dim=512, pred_dim=128", "dim=32, pred_dim=16")
    namespace = {}
    exec(compile(code, "README.md quick start", "exec"), namespace)
    embeddings, model = namespace["embeddings"], namespace["model"]
    assert int(model.optimizer.iterations.numpy()) == 2 * (NUM_FILES // 8)  # two finite epochs of floor(N / batch)
    assert embeddings.shape == (NUM_FILES, model.backbone.output_shape[-1])
    assert np.isfinite(embeddings).all()
    assert [os.path.basename(p) for p in namespace["ordered"].file_paths] == [f"{i:02d}.png" for i in range(NUM_FILES)]
