"""Image folders: listing, the one decode pass that finds unreadable files, and the folder source."""

import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_metaprune.data.sources import _Source
from tf_metaprune.data.splits import _split_indices


#: Image file name endings the folder loader reads (compared in lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _list_images(directory: str) -> List[str]:
  return sorted(
      os.path.join(directory, f)
      for f in os.listdir(directory)
      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS) and
      os.path.isfile(os.path.join(directory, f)))


def _list_class_dirs(root: str) -> List[str]:
  return sorted(d for d in os.listdir(root)
                if not d.startswith(".") and
                os.path.isdir(os.path.join(root, d)))


def _read_class_folders(root: str, class_names: Optional[List[str]] = None):
  """Lists root/<class>/* images; returns (class_names, paths, labels)."""
  found = _list_class_dirs(root)
  if class_names is None:
    class_names = found
    if not class_names:
      raise ValueError(
          f"Image folder {root!r} has no class sub-folders; expected "
          f"{root}/<class>/*.png (one sub-folder per class) or "
          f"{root}/train/<class>/* + {root}/test/<class>/*")
    if len(class_names) < 2:
      raise ValueError(
          f"Image folder {root!r} has only one class sub-folder "
          f"({class_names}); a classifier needs at least 2 classes")
  else:
    unknown = sorted(set(found) - set(class_names))
    if unknown:
      raise ValueError(
          f"Image folder {root!r} has classes {unknown} that are not in the "
          f"train folder ({class_names}); every class needs training images")
  paths, labels = [], []
  for label, class_name in enumerate(class_names):
    class_dir = os.path.join(root, class_name)
    if not os.path.isdir(class_dir):
      continue  # A test folder may lack a class.
    files = _list_images(class_dir)
    if not files:
      raise ValueError(
          f"Class folder {class_dir!r} has no images (looked for "
          f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
    paths += files
    labels += [label] * len(files)
  return class_names, np.array(paths), np.array(labels, dtype=np.int32)


def find_unreadable_images(paths: Sequence[str], progress_from: int = 5000) -> Dict[str, str]:
  """The image files of `paths` that TensorFlow cannot decode, each with the reason.

  One parallel tf.data pass decodes every file (`tf.io.decode_image`, as the
  training pipeline does); the few that fail are decoded again one by one for
  their error message. From `progress_from` files on, a progress line is printed.

  Returns:
    {path: reason}, empty when every file decodes.
  """
  paths = [str(p) for p in paths]
  if not paths:
    return {}
  loud = len(paths) >= progress_from
  if loud:
    print(f"[data] checking that {len(paths):,} images decode (once per load; a corrupt file would otherwise stop "
          "training when the first epoch reaches it)...", flush=True)
  t0 = time.perf_counter()
  ds = tf.data.Dataset.from_tensor_slices(paths)
  ds = ds.map(lambda p: (p, tf.shape(tf.io.decode_image(tf.io.read_file(p), expand_animations=False))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
  readable = set()
  for i, (p, _) in enumerate(ds.batch(1024)):
    readable.update(x.decode() for x in p.numpy())
    if loud and (i + 1) % 20 == 0:
      print(f"[data]   {len(readable):,} / {len(paths):,} decoded", flush=True)
  bad = {}
  for p in paths:
    if p not in readable:
      try:
        _decode_path(p, 0)
        bad[p] = "unreadable"   # failed in the pass (e.g. a read error) but not now
      except ValueError as e:   # "Cannot decode image 'p': {{function_node ...}} Invalid PNG data, size 70 [Op:...]"
        reason = str(e).split(": ", 1)[-1]
        bad[p] = reason.split("}} ", 1)[-1].split(" [Op:", 1)[0].strip()
  if loud:
    print(f"[data]   done: {len(paths) - len(bad):,} readable, {len(bad)} not ({time.perf_counter() - t0:.0f} s)",
          flush=True)
  return bad


def _drop_unreadable(root, paths, labels, test_paths, test_labels, skip_bad_images):
  """Decodes every image of a folder once; raises naming the bad ones, or drops them with a warning."""
  every = list(paths) + ([] if test_paths is None else list(test_paths))
  bad = find_unreadable_images(every)
  if not bad:
    return paths, labels, test_paths, test_labels
  shown = sorted(bad)[:20]
  listed = "; ".join(f"{p} ({bad[p]})" for p in shown)
  more = f"; and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
  if not skip_bad_images:
    raise ValueError(f"{len(bad)} of {len(every):,} images in {root!r} cannot be decoded: {listed}{more}. Replace or "
                     f"delete them, or pass skip_bad_images=True (--skip_bad_images) to train on the other "
                     f"{len(every) - len(bad):,}")
  print(f"[data] warning: skipping {len(bad)} unreadable image(s) of {len(every):,} in {root!r}: {listed}{more}",
        flush=True)
  keep = np.array([p not in bad for p in paths], bool)
  paths, labels = paths[keep], labels[keep]
  if test_paths is not None:
    keep = np.array([p not in bad for p in test_paths], bool)
    test_paths, test_labels = test_paths[keep], test_labels[keep]
  return paths, labels, test_paths, test_labels


def _folder_sources(root, search_fraction, test_fraction, size_hw, skip_bad_images=False):
  """Lists an image folder, checks that every image decodes, and splits it into sources (decoded lazily)."""
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    raise ValueError(
        f"Image folder {root!r} does not exist or is not a directory; "
        "expected 'folder:PATH' with PATH/<class>/*.png")
  test_dir = next((os.path.join(root, d)
                   for d in ("test", "validation")
                   if os.path.isdir(os.path.join(root, d))), None)
  train_dir = os.path.join(root, "train")
  split_paths = {}
  if os.path.isdir(train_dir) and test_dir is not None:
    class_names, paths, labels = _read_class_folders(train_dir)
    _, test_paths, test_labels = _read_class_folders(test_dir, class_names)
    paths, labels, test_paths, test_labels = _drop_unreadable(root, paths, labels, test_paths, test_labels,
                                                              skip_bad_images)
    split_paths["test"] = (test_paths, test_labels)
    idx = _split_indices(labels, search_fraction, None)
  else:
    class_names, paths, labels = _read_class_folders(root)
    paths, labels, _, _ = _drop_unreadable(root, paths, labels, None, None, skip_bad_images)
    idx = _split_indices(labels, search_fraction, test_fraction)
  for split, split_idx in idx.items():
    split_paths[split] = (paths[split_idx], labels[split_idx])

  # The channel count: the most found among the first image of each class
  # (decode_image converts the rest); the size: the first image's.
  probes = [paths[np.flatnonzero(labels == k)[0]] for k in np.unique(labels)]
  probe_images = [_decode_path(p, 0) for p in probes]
  channels = max(int(image.shape[-1]) for image in probe_images)
  channels = 4 if channels == 2 else channels  # decode_image: 1, 3 or 4.
  native_hw = tuple(int(d) for d in probe_images[0].shape[:2])

  def decode(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                               expand_animations=False)
    if size_hw is None:
      same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], native_hw))
      check = tf.debugging.Assert(same_size, [
          f"Images in {root!r} differ in size: expected {native_hw} (the "
          f"size of {probes[0]}); pass input_size to resize them. Found:",
          path, tf.shape(image)
      ])
      with tf.control_dependencies([check]):  # Check before ensure_shape.
        image = tf.ensure_shape(tf.identity(image), native_hw + (channels,))
    else:
      image = tf.ensure_shape(image, (None, None, channels))
    return image, label

  sources = {
      split: _Source(tf.data.Dataset.from_tensor_slices((p, y)), len(p),
                     decode) for split, (p, y) in split_paths.items()
  }
  image_shape = (size_hw or native_hw) + (channels,)
  return sources, len(class_names), image_shape


def _decode_path(path: str, channels: int) -> tf.Tensor:
  try:
    return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                              expand_animations=False)
  except tf.errors.OpError as e:
    raise ValueError(f"Cannot decode image {path!r}: {e.message}") from None
