"""Keras networks used as bottleneck backbones or fine-tuned: builders and their preprocessing.

- `inception_v3`: `keras.applications.InceptionV3(include_top=False, pooling='avg')`,
  2048-d, 299x299 RGB, x / 127.5 - 1 (the prototype's backbone).
- `vggface`: the VGG16 face network of rcmalli/keras-vggface (conv blocks of VGG16 with
  its layer names conv1_1 .. conv5_3, pool1 .. pool5), 224x224 BGR minus the VGGFace mean
  [93.5940, 104.7624, 129.1863]. The embedding is the global average of pool5 (512-d),
  as `VGGFace(include_top=False, pooling='avg')` gives: fc6/fc7 would add 120M
  parameters (a 500 MB ONNX file) for a 4096-d row that LightGBM handles worse, and the
  notop weights file (rcmalli_vggface_tf_notop_vgg16.h5) loads into it as is.
- `faceres`: the MobileNet-v1 layout of models/faceres.onnx (see `faceres_model`), whose
  weights come from that ONNX file (`load_faceres_weights`).
- `simple_cnn`: a small CNN trained from scratch, the prototype's baseline.

Every spec states its preprocessing in the convention of `realtime.metadata`
(pixel' = (pixel - mean[c]) * scale, mean in the model's channel order), so the
exported models are fed by the same code as every other model. Inception's
x / 127.5 - 1 is (x - 127.5) * (1 / 127.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from realtime.model import preprocess_crops

ARCHES = ("inception_v3", "vggface")
VGGFACE_MEAN_BGR = (93.5940, 104.7624, 129.1863)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# MobileNet v1 (alpha 1): (pointwise filters, depthwise stride) of blocks 1..13
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1))
N_AGE_CLASSES = 100  # ages 0..99, as faceres' pretrained age softmax


@dataclass(frozen=True)
class KerasSpec:
    """How to feed a Keras network, in `realtime.metadata` terms."""

    arch: str
    input_size: int
    channel_order: Literal["BGR", "RGB"]
    mean: tuple[float, float, float]
    scale: float
    embedding_dim: int
    # 0.2 as faceres: both were trained on loose face crops (VGGFace2, ImageNet-like
    # portraits in the prototype); margin 0.2 of the box on each side keeps hair and chin
    crop_margin: float = 0.2
    layout: Literal["NHWC"] = "NHWC"  # Keras' image layout

    def input_fields(self) -> dict[str, Any]:
        """The `realtime.metadata.ModelMetadata` fields that describe this network's input."""
        return {
            "input_size": self.input_size,
            "layout": self.layout,
            "channel_order": self.channel_order,
            "mean": self.mean,
            "scale": self.scale,
            "crop_margin": self.crop_margin,
        }


SPECS: dict[str, KerasSpec] = {
    "inception_v3": KerasSpec("inception_v3", 299, "RGB", (127.5, 127.5, 127.5), 1 / 127.5, 2048),
    "vggface": KerasSpec("vggface", 224, "BGR", VGGFACE_MEAN_BGR, 1.0, 512),
    "faceres": KerasSpec("faceres", 224, "BGR", CAFFE_MEAN_BGR, 1.0, 1024),
    "simple_cnn": KerasSpec("simple_cnn", 128, "BGR", (127.5, 127.5, 127.5), 1 / 127.5, 256),
}


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools (call before building anything): the training
    machine shares its few cores with the detector and other jobs."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process: keep what it has
            pass


def preprocess(crops_bgr: np.ndarray, spec: KerasSpec) -> np.ndarray:
    """BGR uint8 crops (N, S, S, 3) to the network's input, as realtime.model does it."""
    return preprocess_crops(crops_bgr, spec)


def resolve_weights(weights: str | None) -> str | Path | None:
    """'imagenet' stays a keyword, 'none'/'' means random, anything else must be a file."""
    if weights is None or weights.lower() in ("", "none", "random"):
        return None
    if weights == "imagenet":
        return weights
    path = Path(weights)
    if not path.is_file():
        raise SystemExit(f"weights file not found: {path}")
    return path


def inception_v3(weights: str | None = None, seed: int = 0):
    """InceptionV3 without its classifier, average-pooled: (N, 299, 299, 3) RGB -> (N, 2048)."""
    import keras

    source = resolve_weights(weights)
    keras.utils.set_random_seed(seed)
    model = keras.applications.InceptionV3(
        include_top=False, pooling="avg", weights="imagenet" if source == "imagenet" else None, input_shape=(299, 299, 3)
    )
    if isinstance(source, Path):
        model.load_weights(str(source))
    return model


def vggface(weights: str | None = None, seed: int = 0):
    """VGGFace VGG16 conv blocks, global-average-pooled: (N, 224, 224, 3) BGR - mean -> (N, 512)."""
    import keras
    from keras import layers

    source = resolve_weights(weights)
    if source == "imagenet":
        raise SystemExit("VGGFace has no ImageNet weights: pass its .h5 weights file, or none")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((224, 224, 3), name="image")
    x = inputs
    for block, (filters, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{block}_{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    x = layers.GlobalAveragePooling2D(name="global_pooling")(x)
    model = keras.Model(inputs, x, name="vggface_vgg16")
    if isinstance(source, Path):
        load_h5_by_name(model, source)
    return model


def load_h5_by_name(model, path: Path) -> list[str]:
    """Copy weights from a Keras 2 .h5 file (keras-vggface's) into layers of the same name.

    Keras 3 reads only its own format by structure; the rcmalli files are Keras 2 h5
    with `model_weights/<layer>/<layer>/{kernel,bias}:0`. Layers absent from the model
    (fc6..fc8 of the with-top file) are skipped; a model layer absent from the file is
    an error, since it would silently stay random.
    """
    import h5py

    loaded = []
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in root:
                raise SystemExit(f"{path} has no weights for layer {layer.name!r}")
            group = root[layer.name]
            arrays: dict[str, np.ndarray] = {}

            def collect(name: str, obj) -> None:  # returning a value would stop the visit
                if isinstance(obj, h5py.Dataset):
                    arrays[name.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

            group.visititems(collect)
            try:
                layer.set_weights([arrays[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])
            except (KeyError, ValueError) as exc:
                raise SystemExit(f"{path}: weights of layer {layer.name!r} do not fit ({exc})") from None
            loaded.append(layer.name)
    return loaded


def build_backbone(arch: str, weights: str | None = None, seed: int = 0):
    """The Keras bottleneck network for `arch` (inception_v3 or vggface)."""
    if arch == "inception_v3":
        return inception_v3(weights, seed)
    if arch == "vggface":
        return vggface(weights, seed)
    raise SystemExit(f"unknown backbone architecture {arch!r}: choose one of {', '.join(ARCHES)}")


# ----------------------------------------------------------------------------- faceres


def faceres_base(input_name: str = "input_1"):
    """MobileNet v1 as in models/faceres.onnx, batch norms folded into the convolutions:
    (N, 224, 224, 3) BGR - caffe mean -> embedding (N, 1024) named `embedding`.

    The ONNX file's BN of each depthwise conv is a per-channel Mul + Add, folded here into
    the depthwise kernel and a bias, so every layer maps onto ONNX initializers 1:1. Strided
    convs use 'same' padding, which pads bottom/right only, as the ONNX pads [0, 0, 1, 1].
    """
    import keras
    from keras import layers

    inputs = keras.Input((224, 224, 3), name=input_name)
    x = layers.Conv2D(32, 3, strides=2, padding="same", name="conv1")(inputs)
    x = layers.ReLU(6.0, name="conv1_relu")(x)
    for i, (filters, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", name=f"conv_dw_{i}")(x)
        x = layers.ReLU(6.0, name=f"conv_dw_{i}_relu")(x)
        x = layers.Conv2D(filters, 1, name=f"conv_pw_{i}")(x)
        x = layers.ReLU(6.0, name=f"conv_pw_{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    return keras.Model(inputs, x, name="faceres_mobilenet")


def faceres_layer_order() -> list[str]:
    """Keras layer names in the order their weights appear in the ONNX graph."""
    names = ["conv1"]
    for i in range(1, len(MOBILENET_BLOCKS) + 1):
        names += [f"conv_dw_{i}", f"conv_pw_{i}"]
    return names + ["feats", "gender_pred", "age_pred"]


def onnx_layer_weights(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """(kind, Keras-layout weights) per weighted layer of faceres.onnx, in graph order.

    kind is 'conv', 'depthwise' or 'dense'. Conv weights (O, I, kh, kw) become Keras
    kernels (kh, kw, I, O); depthwise (C, 1, kh, kw) become (kh, kw, C, 1) with the
    following BN Mul folded in and its Add as the bias; MatMul (in, out) plus the next
    Add's constant are a Dense layer as they are.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def affine_after(output: str, op: str) -> tuple[np.ndarray, str] | None:
        """The constant operand and output of the single `op` node reading `output`."""
        nodes = consumers.get(output, [])
        if len(nodes) != 1 or nodes[0].op_type != op:
            return None
        const = [inits[i] for i in nodes[0].input if i in inits]
        return (const[0], nodes[0].output[0]) if const else None

    layers: list[tuple[str, list[np.ndarray]]] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1:
                if group != w.shape[0] or w.shape[1] != 1:
                    raise ValueError(f"{node.name}: grouped conv that is not depthwise ({w.shape}, group {group})")
                kernel = w.transpose(2, 3, 0, 1)  # (kh, kw, C, 1)
                bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
                mul = affine_after(node.output[0], "Mul")
                if mul is not None:
                    scale, out = mul
                    scale = scale.reshape(-1)
                    add = affine_after(out, "Add")
                    shift = add[0].reshape(-1) if add is not None else np.zeros_like(scale)
                    kernel = kernel * scale[None, None, :, None]
                    bias = bias * scale + shift
                layers.append(("depthwise", [kernel.astype(np.float32), bias.astype(np.float32)]))
            else:
                kernel = w.transpose(2, 3, 1, 0)  # (kh, kw, I, O)
                bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
                layers.append(("conv", [kernel.astype(np.float32), bias.astype(np.float32)]))
        elif node.op_type == "MatMul" and node.input[1] in inits:
            kernel = inits[node.input[1]]
            add = affine_after(node.output[0], "Add")
            bias = add[0].reshape(-1) if add is not None else np.zeros(kernel.shape[1], np.float32)
            layers.append(("dense", [kernel.astype(np.float32), np.broadcast_to(bias, (kernel.shape[1],)).astype(np.float32)]))
    return layers


def load_faceres_weights(model, source: str | Path | list, heads: bool = True) -> list[str]:
    """Set the faceres layers of `model` (named as `faceres_layer_order`) from the ONNX file
    (or from `onnx_layer_weights` of it, already read).

    Returns the names of the layers set. With heads=False the pretrained feats/gender/age
    layers are not required in `model`.
    """
    weights = source if isinstance(source, list) else onnx_layer_weights(source)
    names = faceres_layer_order()
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} weighted layers in the ONNX file, the faceres layout has {len(names)}")
    done = []
    for name, (kind, arrays) in zip(names, weights):
        if not heads and name in ("feats", "gender_pred", "age_pred"):
            continue
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.weights]
        if expected != [a.shape for a in arrays]:
            raise ValueError(f"layer {name}: ONNX {kind} weights {[a.shape for a in arrays]} do not fit {expected}")
        layer.set_weights(arrays)
        done.append(name)
    return done


# ----------------------------------------------------------------------------- simple CNN


def simple_cnn_base(input_name: str = "image"):
    """The prototype's from-scratch baseline: four conv-BN-ReLU-pool blocks, global pooling.
    (N, 128, 128, 3) -> (N, 256) named `embedding`."""
    import keras
    from keras import layers

    inputs = keras.Input((128, 128, 3), name=input_name)
    x = inputs
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    return keras.Model(inputs, x, name="simple_cnn")
