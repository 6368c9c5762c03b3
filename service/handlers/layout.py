"""The names of a fer-service `.mar` archive, in one place.

Read by the handlers (this file is shipped inside every archive, beside `base.py`),
service/archive.py (which opens archives), training/export.py (which writes them) and
training/train/checkpoint.py (which reads weights out of them). Plain constants only: the
gateway reads archives without importing torch.
"""

from __future__ import annotations

#: TorchServe's manifest inside every `.mar`.
MANIFEST = "MAR-INF/MANIFEST.json"

#: The archive's description (classes, input crop, network source and arguments).
METADATA_FILE = "metadata.json"

#: The network's weights as a state_dict (loaded with `weights_only=True`).
WEIGHTS_FILE = "weights.pt"

#: Per-model TorchServe settings (workers, batching, timeouts).
MODEL_CONFIG_FILE = "model-config.yaml"

#: Modules every archive carries beside its handler, which imports them.
SHARED_FILES = ("layout.py", "base.py", "runtime.py")

#: The handler file serving each kind of model.
HANDLER_FOR_KIND = {
    "classifier": "classifier.py",
    "derl": "classifier.py",
    "transfer": "generator.py",
    "frontalizer": "generator.py",
    "sequence": "sequence_classifier.py",  # not sequence.py: that is the network's file
}
