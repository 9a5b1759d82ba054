"""The values a choice setting accepts, each listed once (the models, data and tools import them from here)."""

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
COLLAPSE_ACTIONS = ("stop", "warn", "ignore")
KEEP_BEST = ("latest", "rank")
METHODS = ("simsiam", "simtriplet")
NEIGHBOURHOODS = ("4", "8", "group")
TILE_PATTERN = r"(?P<group>.+)_x(?P<col>\d+)_y(?P<row>\d+)\.(png|jpe?g)"
TILE_DATASETS = ("synthetic_tiles", "folder")
PROBE_OPTIMIZERS = ("lars", "sgd")
VERIFY_HEADS = ("contrastive", "triplet", "classifier", "cosine")
VERIFY_AUGMENTS = ("none", "crop", "crop_flip")
MININGS = ("semi_hard", "batch_hard")
DISTANCES = ("l2", "squared_l2", "angular")
EXPORT_KINDS = ("pretrain", "linear", "verify")
ON_BAD_FILE = ("error", "skip")
SYNC_BN = ("auto", "true", "false")
LR_SCHEDULES = ("step", "epoch")
PROJECTOR_BN = ("all", "hidden", "none")
INPUT_COLOURS = ("rgb", "luma")
PREDICTOR_BN = ("hidden", "all", "none")
AUGMENT_ON = ("auto", "host", "device")
VERBOSITY = ("auto", "0", "1", "2")
PROJECTOR_LAYERS = (2, 3)
DATA_SERVICE_SCHEME = "grpc://"
ALL_SPLIT = "all"  # simsiam-embed: every image of a folder, no hold-out

# The ResNet architectures (simsiam_tf.models.backbones builds them); each also comes with the CIFAR stem.
BACKBONE_ARCHS = ("resnet18", "resnet34", "resnet50")
CIFAR_SUFFIX = "_cifar"
# Encoders for 28-64 px images (simsiam_tf.models.small_backbones): three stages, two downsamplings.
SMALL_BACKBONES = ("small_resnet", "small_vgg")
BACKBONE_NAMES = tuple(sorted(BACKBONE_ARCHS + tuple(a + CIFAR_SUFFIX for a in BACKBONE_ARCHS) + SMALL_BACKBONES))
# Keras Applications models, spelled KERAS_PREFIX + name (simsiam_tf.models.keras_backbones builds them);
# tests/models/test_keras_backbones.py checks each name against the installed Keras.
KERAS_PREFIX = "keras:"
KERAS_APPLICATIONS = (
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtTiny",
    "ConvNeXtXLarge",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetB4",
    "EfficientNetB5",
    "EfficientNetB6",
    "EfficientNetB7",
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2L",
    "EfficientNetV2M",
    "EfficientNetV2S",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "NASNetLarge",
    "NASNetMobile",
    "ResNet101",
    "ResNet101V2",
    "ResNet152",
    "ResNet152V2",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "VGG19",
    "Xception",
)
# --backbone_weights: these words, or a path to a .weights.h5 file of the backbone.
BACKBONE_WEIGHTS = ("none", "imagenet")
WEIGHTS_SUFFIX = ".weights.h5"
# --bn_convention: each backbone's own BatchNorm momentum/epsilon, or the PyTorch reference's (0.9 / 1e-5).
BN_CONVENTIONS = ("model", "reference")
