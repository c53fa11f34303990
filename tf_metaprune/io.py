"""JSON files for structures, search state and lookup tables (never pickle).

Writes are atomic: the text goes to a temporary file in the same folder, is
flushed to disk, and is renamed over the target, so a process killed mid-write
leaves either the old file or the new one, never half of one.
"""

import json
import os
import tempfile


def write_text_atomic(path, text):
  """Writes `text` to `path` atomically (temp file + fsync + rename).

  Raises:
    PermissionError / OSError: with the path, if the folder is not writable.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  umask = os.umask(0)
  os.umask(umask)
  try:
    os.fchmod(fd, 0o666 & ~umask)   # mkstemp makes 0600; results should be readable like any file
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path, obj):
  """`json.dumps(obj)` written atomically to `path`."""
  write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path, what="JSON file"):
  """Parses a JSON file, raising ValueError naming the file if it is corrupt."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{what} {path!r} is not valid JSON ({e}); it may be truncated or foreign. "
                     "Move it away to start over.") from None
