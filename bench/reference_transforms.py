"""The reference's pretraining augmentation, as PIL and NumPy code.

facebookresearch/simsiam `main_simsiam.py` builds, for each of the two views
(`TwoCropsTransform`):

    RandomResizedCrop(224, scale=(0.2, 1.)),
    RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    RandomGrayscale(p=0.2),
    RandomApply([GaussianBlur([.1, 2.])], p=0.5),   # simsiam/loader.py: PIL's GaussianBlur
    RandomHorizontalFlip(),
    ToTensor(),
    Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

and `ImageFolder`'s loader opens each file with PIL and converts it to RGB. On PIL
images torchvision's transforms are thin wrappers around PIL calls; this module
makes the same calls in the same order with the same parameter draws
(`torchvision.transforms` and `transforms.functional_pil`), so that the loader's cost
can be measured where torchvision is not installed. When torchvision is importable,
`torchvision_pipeline()` builds the original transforms instead.

The random numbers come from a `random.Random` instead of torch's generator; the
distributions are the same.
"""

import math
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_rgb(path):
    """torchvision's `pil_loader`: open, convert to RGB (this decodes the file)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def resized_crop_params(rng, width, height, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """`RandomResizedCrop.get_params`: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return top, left, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def adjust_hue(img, hue_factor):
    """`functional_pil.adjust_hue`: shift PIL's 8-bit HSV hue, wrapping around."""
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.uint8(int(hue_factor * 255) % 256)
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")


def color_jitter(img, rng, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
    """`ColorJitter.forward`: the four adjustments in a random order, factors drawn up front."""
    order = list(range(4))
    rng.shuffle(order)
    b = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
    c = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
    h = rng.uniform(-hue, hue)
    for op in order:
        if op == 0:
            img = ImageEnhance.Brightness(img).enhance(b)
        elif op == 1:
            img = ImageEnhance.Contrast(img).enhance(c)
        elif op == 2:
            img = ImageEnhance.Color(img).enhance(s)
        else:
            img = adjust_hue(img, h)
    return img


def to_grayscale3(img):
    """`functional_pil.to_grayscale(img, 3)`."""
    gray = np.array(img.convert("L"), dtype=np.uint8)
    return Image.fromarray(np.dstack([gray, gray, gray]), "RGB")


def to_normalized_tensor(img):
    """ToTensor then Normalize: float32 CHW, (x / 255 - mean) / std."""
    x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x /= 255.0
    x -= MEAN[:, None, None]
    x /= STD[:, None, None]
    return x


class ReferenceView:
    """One view of the reference's augmentation, PIL image -> float32 [3, size, size]."""

    def __init__(self, size=224, seed=0):
        self.size = size
        self.rng = random.Random(seed)

    def __call__(self, img):
        rng = self.rng
        top, left, h, w = resized_crop_params(rng, img.width, img.height)
        # F.resized_crop on a PIL image: crop, then resize with PIL's (antialiased) bilinear.
        img = img.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.BILINEAR)
        if rng.random() < 0.8:
            img = color_jitter(img, rng)
        if rng.random() < 0.2:
            img = to_grayscale3(img)
        if rng.random() < 0.5:
            img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_normalized_tensor(img)


def torchvision_pipeline(size=224):
    """The original transforms (needs torch and torchvision); `None` when they are not importable."""
    try:
        import torchvision.transforms as T
    except ImportError:
        return None

    class GaussianBlur:
        def __init__(self, sigma=(0.1, 2.0)):
            self.sigma = sigma

        def __call__(self, x):
            return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.sigma[0], self.sigma[1])))

    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
        ]
    )


class ReferenceLoader:
    """The reference's per-sample work and collation: load, two views, stack a batch.

    `batch(paths)` -> (view1, view2), each float32 [B, 3, size, size], as the
    DataLoader's default collate stacks the `TwoCropsTransform` outputs.
    """

    def __init__(self, size=224, seed=0, use_torchvision=True):
        tv = torchvision_pipeline(size) if use_torchvision else None
        self.uses_torchvision = tv is not None
        if tv is not None:
            self.view = lambda img: tv(img).numpy()
        else:
            self.view = ReferenceView(size, seed)

    def batch(self, paths):
        firsts, seconds = [], []
        for path in paths:
            img = load_rgb(path)
            firsts.append(self.view(img))
            seconds.append(self.view(img))
        return np.stack(firsts), np.stack(seconds)
