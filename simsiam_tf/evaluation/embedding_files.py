"""The files `simsiam-embed` writes: embeddings.npz, neighbours and duplicates CSVs, a contact sheet, projector files.

No TensorFlow here: arrays and file names in, files out. Images are uint8 [H, W, 3].
"""

import csv
import math
import os

import numpy as np
from PIL import Image, ImageDraw

EMBEDDINGS_NAME = "embeddings.npz"
NEIGHBOURS_NAME = "neighbours.csv"
CONTACT_SHEET_NAME = "neighbours.png"
DUPLICATES_NAME = "duplicates.csv"
PROJECTOR_DIR = "projector"
PROJECTOR_CONFIG = "projector_config.pbtxt"  # the name TensorBoard's projector plugin looks for
PROJECTOR_TENSORS = "tensors.tsv"
PROJECTOR_METADATA = "metadata.tsv"
PROJECTOR_SPRITE = "sprite.png"
SPRITE_MAX_SIDE = 8192  # the largest sprite the projector loads
THUMBNAIL = 64


def write_embeddings(path, embeddings, paths, labels, class_names):
    """`embeddings` float32 [N, D], `paths` str [N], `labels` int64 [N] (-1: none), `class_names` str [C]."""
    np.savez(
        path,
        embeddings=np.asarray(embeddings, np.float32),
        paths=np.asarray(list(paths), dtype=np.str_),
        labels=np.asarray(labels, np.int64),
        class_names=np.asarray(list(class_names), dtype=np.str_),
    )
    return path


def load_embeddings(path):
    """{"embeddings", "paths", "labels", "class_names"} of an embeddings.npz, no pickles needed."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in ("embeddings", "paths", "labels", "class_names")}


def write_neighbours_csv(path, paths, indices, similarities):
    """One row per query and rank (1 = nearest): query_path, rank, neighbour_path, similarity."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query_path", "rank", "neighbour_path", "similarity"])
        for q, (row, sims) in enumerate(zip(indices, similarities)):
            for rank, (j, s) in enumerate(zip(row, sims), 1):
                writer.writerow([paths[q], rank, paths[j], f"{s:.6f}"])
    return path


def write_duplicates_csv(path, paths, pairs, similarities):
    """One row per pair above the threshold: path_a, path_b, similarity (highest first)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path_a", "path_b", "similarity"])
        for (i, j), s in zip(pairs, similarities):
            writer.writerow([paths[i], paths[j], f"{s:.6f}"])
    return path


def thumbnail(image, side=THUMBNAIL):
    """A uint8 image fitted into a side x side square (aspect kept, black borders) as a PIL image."""
    picture = Image.fromarray(np.asarray(image, np.uint8))
    if max(picture.size) > side:
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    elif max(picture.size) < side:
        scale = side / max(picture.size)
        size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
        picture = picture.resize(size, Image.Resampling.NEAREST)
    square = Image.new("RGB", (side, side))
    square.paste(picture, ((side - picture.size[0]) // 2, (side - picture.size[1]) // 2))
    return square


def write_contact_sheet(path, images, queries, indices, similarities, side=THUMBNAIL):
    """A PNG: one row per query, the query then its neighbours, each neighbour's cosine under it.

    `images` maps an index to its uint8 image; `indices`/`similarities` are the queries' rows.
    """
    caption = 14
    gap = 4
    columns = 1 + indices.shape[1]
    width = columns * (side + gap) + gap
    height = len(queries) * (side + caption + gap) + gap
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, q in enumerate(queries):
        top = gap + row * (side + caption + gap)
        cells = [(q, "query")] + [(j, f"{s:.3f}") for j, s in zip(indices[row], similarities[row])]
        for col, (index, text) in enumerate(cells):
            left = gap + col * (side + gap)
            sheet.paste(thumbnail(images[int(index)], side), (left, top))
            if col == 0:
                draw.rectangle([left - 2, top - 2, left + side + 1, top + side + 1], outline=(200, 0, 0), width=2)
            draw.text((left + 2, top + side + 1), text, fill=(0, 0, 0))
    sheet.save(path)
    return path


def write_projector(directory, embeddings, paths, labels, class_names, images=None):
    """TensorBoard projector files for `tensorboard --logdir <directory>`; returns the sprite side or 0.

    tensors.tsv (one vector per line), metadata.tsv (a header, then path, label and class
    per vector), and with `images` (uint8, one per vector) sprite.png: thumbnails in a
    square grid, row-major, as the projector reads it.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    os.makedirs(directory, exist_ok=True)
    embeddings = np.asarray(embeddings, np.float32)
    np.savetxt(os.path.join(directory, PROJECTOR_TENSORS), embeddings, delimiter="\t", fmt="%.6g")
    with open(os.path.join(directory, PROJECTOR_METADATA), "w", newline="") as f:
        f.write("path\tlabel\tclass\n")
        for p, y in zip(paths, labels):
            name = class_names[y] if 0 <= y < len(class_names) else ""
            f.write(f"{_tsv(p)}\t{int(y)}\t{_tsv(name)}\n")
    config = projector_config_pb2.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embeddings"
    embedding.tensor_path = PROJECTOR_TENSORS
    embedding.metadata_path = PROJECTOR_METADATA
    embedding.tensor_shape.extend(embeddings.shape)
    side = 0
    if images is not None:
        per_row = max(1, math.ceil(math.sqrt(len(images))))
        side = max(1, min(THUMBNAIL, SPRITE_MAX_SIDE // per_row))
        sprite = Image.new("RGB", (per_row * side, per_row * side))
        for i, image in enumerate(images):
            sprite.paste(thumbnail(image, side), ((i % per_row) * side, (i // per_row) * side))
        sprite.save(os.path.join(directory, PROJECTOR_SPRITE))
        embedding.sprite.image_path = PROJECTOR_SPRITE
        embedding.sprite.single_image_dim.extend([side, side])
    with open(os.path.join(directory, PROJECTOR_CONFIG), "w") as f:
        f.write(text_format.MessageToString(config))
    return side


def _tsv(text):
    return str(text).replace("\t", " ").replace("\n", " ")
