"""How long the decode check of a `folder:` dataset takes (tf_metaprune.data.find_unreadable_images).

Writes N random 28x28 grayscale PNGs (Fashion-MNIST's size) into a temporary folder, one of them
truncated, and times the check that `load_dataset("folder:...")` runs before any training. Prints the
time and the load average; writes benchmarks/results/image_check_speed.json.

  python benchmarks/image_check_speed.py                 # 70,000 images (Fashion-MNIST's count)
  python benchmarks/image_check_speed.py --num_images=5000
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow as tf  # pylint: disable=wrong-import-position
from tf_metaprune import data  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=70000)
  args = parser.parse_args()
  folder = tempfile.mkdtemp(prefix="image_check_")
  try:
    rng = np.random.default_rng(0)
    pngs = [tf.io.encode_png(rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)).numpy() for _ in range(64)]
    paths = []
    for i in range(args.num_images):
      p = os.path.join(folder, f"{i:06d}.png")
      with open(p, "wb") as f:
        f.write(pngs[i % len(pngs)] if i != 7 else pngs[0][:40])
      paths.append(p)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    bad = data.find_unreadable_images(paths)
    seconds = time.perf_counter() - t0
    result = {"command": " ".join(["python", "benchmarks/image_check_speed.py"] + sys.argv[1:]),
              "num_images": args.num_images, "seconds": round(seconds, 2), "bad_found": len(bad),
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    print(json.dumps(result))
    out = os.path.join(ROOT, "benchmarks", "results", "image_check_speed.json")
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
  finally:
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
  main()
