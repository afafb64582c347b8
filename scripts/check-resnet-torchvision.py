"""Loads a TwoBP ResNet checkpoint into torchvision's ResNet class and computes, on the digits'
held-out batches, the loss and accuracy `twobp eval` reports, in eval mode (running statistics)
and in training mode (each batch's own statistics, `twobp eval --training-mode`).

    python scripts/check-resnet-torchvision.py [--side N] STEP_FOLDER DIGITS BATCH_SIZE MAX_BATCHES [EVAL_JSON TRAIN_JSON]

STEP_FOLDER holds config.json and model.safetensors (a checkpoint's step-N); DIGITS is
data/digits.bin (scripts/setup-data.sh). With the two `twobp eval --json` files of the same
checkpoint, data, --batch-size, --max-windows and --seq-len (= --side, default the config's image_size; plain and with --training-mode), it prints the
relative differences and exits 1 unless every one is below 1e-5.

Needs torch, numpy, safetensors and torchvision's wheel (scripts/setup-reference-venv.sh). That
wheel is built against CUDA torch, so its package __init__ (which loads the compiled ops) fails
beside the CPU torch here; this loads torchvision/models/resnet.py alone, with stand-ins for the
three modules it imports only for pretrained-weight metadata and logging (transforms._presets,
utils), and builds the model from its ResNet and Bottleneck classes. Widths other than
torchvision's 64, 128, 256, 512 and fewer than four stages are built with the class's own
_make_layer, stages past the last as nn.Identity (no parameters, so the state dict is exact).
"""
import importlib.util
import json
import sys
import types

import numpy as np
import torch
from safetensors.torch import load_file


def torchvision_resnet_module():
    root = importlib.util.find_spec("torchvision").submodule_search_locations[0]
    for name, sub in [("torchvision", ""), ("torchvision.models", "/models"), ("torchvision.transforms", "/transforms")]:
        package = types.ModuleType(name)
        package.__path__ = [root + sub]
        sys.modules[name] = package
    presets = types.ModuleType("torchvision.transforms._presets")
    presets.ImageClassification = type("ImageClassification", (), {})
    sys.modules["torchvision.transforms._presets"] = presets
    utils = types.ModuleType("torchvision.utils")
    utils._log_api_usage_once = lambda *args, **kwargs: None
    sys.modules["torchvision.utils"] = utils
    import torchvision.models.resnet as resnet
    return resnet


def build(resnet, config):
    layers, widths, classes = config["layers"], config["widths"], config["num_classes"]
    channels = config["num_channels"]
    if widths == [64 << i for i in range(4)][: len(widths)] and len(layers) == 4 and channels == 3:
        return resnet.ResNet(resnet.Bottleneck, layers, num_classes=classes)
    nn = torch.nn
    model = resnet.ResNet.__new__(resnet.ResNet)
    nn.Module.__init__(model)
    model._norm_layer, model.dilation, model.groups, model.base_width = nn.BatchNorm2d, 1, 1, 64
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    model.relu = nn.ReLU(inplace=True)
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    for stage in range(4):
        layer = (model._make_layer(resnet.Bottleneck, widths[stage], layers[stage], stride=1 if stage == 0 else 2)
                 if stage < len(layers) else nn.Identity())
        setattr(model, f"layer{stage + 1}", layer)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.fc = nn.Linear(widths[-1] * resnet.Bottleneck.expansion, classes)
    return model


def held_out_batches(path, side, channels, batch_size, max_batches):
    """The digits' held-out images (every fifth) as DigitsImages serves them: v / 8 - 1, enlarged by
    repeating pixels, repeated over the channels, channels-last; full batches in order."""
    records = np.frombuffer(open(path, "rb").read(), dtype=np.uint8).reshape(-1, 65)
    held = records[4::5]
    labels = held[:, 0].astype(np.int64)
    images = held[:, 1:].reshape(-1, 8, 8).astype(np.float32) / 8 - 1
    index = np.arange(side) * 8 // side
    images = images[:, index][:, :, index]
    images = np.repeat(images[..., None], channels, axis=3)
    count = min(len(held) // batch_size, max_batches)
    for b in range(count):
        span = slice(b * batch_size, (b + 1) * batch_size)
        yield torch.from_numpy(np.ascontiguousarray(images[span])).permute(0, 3, 1, 2), torch.from_numpy(labels[span])


def terms(model, batches):
    loss = correct = seen = 0.0
    with torch.no_grad():
        for count, (images, labels) in enumerate(batches, start=1):
            logits = model(images)
            loss += torch.nn.functional.cross_entropy(logits.double(), labels).item()
            correct += (logits.argmax(dim=1) == labels).double().mean().item()
    return {"loss": loss / count, "accuracy": correct / count, "batches": count}


side_override = None
if sys.argv[1] == "--side":
    side_override = int(sys.argv[2])
    del sys.argv[1:3]
folder, digits, batch_size, max_batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = json.load(open(f"{folder}/config.json"))
resnet = torchvision_resnet_module()
model = build(resnet, config)
state = load_file(f"{folder}/model.safetensors")
model.load_state_dict(state, strict=True)
side, channels = side_override or config["image_size"], config["num_channels"]
results = {"eval": terms(model.eval(), held_out_batches(digits, side, channels, batch_size, max_batches)),
           "train": terms(model.train(), held_out_batches(digits, side, channels, batch_size, max_batches)),
           "torch": torch.__version__, "torchvision_module": resnet.__file__}
print(json.dumps(results))
if len(sys.argv) > 6:
    worst = 0.0
    for mode, path in [("eval", sys.argv[5]), ("train", sys.argv[6])]:
        twobp = json.load(open(path))
        for term in ["loss", "accuracy"]:
            difference = abs(twobp[term] - results[mode][term]) / max(abs(results[mode][term]), 1e-30)
            worst = max(worst, difference)
            print(f"{mode} {term}: twobp {twobp[term]:.9f} torchvision {results[mode][term]:.9f} relative difference {difference:.3e}")
    if worst >= 1e-5:
        sys.exit(f"relative difference {worst:.3e} is not below 1e-5")
    print(f"OK: every relative difference below 1e-5 (worst {worst:.3e})")
