"""JSON files for structures, search state and lookup tables (never pickle).

Writes are atomic: the text goes to a temporary file in the same folder, is
flushed to disk, and is renamed over the target, so a process killed mid-write
leaves either the old file or the new one, never half of one. Reads go through
`json` only (no pickle, no `eval`, no class lookup by name), so loading a file
never runs code from it; a file that is not valid JSON, or not the kind of file
expected, is reported with its path and left where it is.
"""

import json
import os
import re
import secrets
import socket
import tempfile


class NotWritableError(PermissionError, ValueError):
  """A folder the library must write to is not writable.

  Both a `PermissionError` (what the operating system said) and a `ValueError`
  (the argument naming that folder is bad input), so either `except` works.
  """


def check_writable_dir(folder, what="output folder"):
  """Creates `folder` if needed and checks a file can be created in it.

  Called by the entry points that write (training checkpoints, search state)
  before any work is done, so a read-only folder fails in a second, not after
  the first epoch.

  Args:
    folder: the folder path.
    what: how the caller names it in the message, e.g. "output_dir".

  Returns:
    The absolute path of the folder.

  Raises:
    NotWritableError: naming the folder, if it cannot be created or written.
  """
  folder = os.path.abspath(folder)
  try:
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".tf_metaprune_write_probe.")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise NotWritableError(
        e.errno, f"{what}={folder!r} is not writable ({e.strerror or e}); choose a folder you can write to "
        "or fix its permissions") from None
  return folder


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # another user's process
    return True
  return True


def temp_path_for(path, suffix=""):
  """A fresh hidden sibling of `path` to write before renaming it over `path`.

  The name, `.NAME.PID@HOST.RANDOM.tmp` + `suffix`, says which process writes
  it. The temporary siblings of `path` left by processes of this host that no
  longer run (killed mid-write) are deleted here, so an interrupted write
  leaves nothing behind once the file is written again; those of other hosts
  (a shared filesystem) and of live processes are left alone.

  Args:
    path: the file that will be written.
    suffix: an ending the writer needs (Keras saves only to `.keras` or
      `.weights.h5` names).

  Returns:
    An absolute path in the folder of `path` (not created).
  """
  folder, name = os.path.split(os.path.abspath(path))
  host = socket.gethostname().replace(os.sep, "_")
  stale = re.compile(rf"\.{re.escape(name)}\.(\d+)@{re.escape(host)}\.[0-9a-f]{{8}}\.tmp.*")
  try:
    siblings = os.listdir(folder)
  except OSError:
    siblings = []
  for sibling in siblings:
    m = stale.fullmatch(sibling)
    if m and not _alive(int(m.group(1))):
      try:
        os.remove(os.path.join(folder, sibling))
      except OSError:
        pass
  return os.path.join(folder, f".{name}.{os.getpid()}@{host}.{secrets.token_hex(4)}.tmp{suffix}")


def write_text_atomic(path, text):
  """Writes `text` to `path` atomically as UTF-8 (see `write_bytes_atomic`)."""
  write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path, data):
  """Writes `data` to `path` atomically (temp file + fsync + rename).

  The folder is created if needed; the file gets the usual permissions
  (0666 less the umask).

  Raises:
    NotWritableError: naming the path, if its folder is not writable.
  """
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  except OSError as e:
    raise NotWritableError(e.errno, f"cannot write {path!r}: its folder is not writable ({e.strerror or e}); "
                           "choose another path or fix the folder's permissions") from None
  umask = os.umask(0)
  os.umask(umask)
  try:
    os.fchmod(fd, 0o666 & ~umask)   # created 0600; results should be readable like any file
    with os.fdopen(fd, "wb") as f:
      f.write(data)
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


def read_text(path, what="file"):
  """The text of `path`, or a ValueError naming it (missing, unreadable, not UTF-8)."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except FileNotFoundError:
    raise ValueError(f"{what} {path!r} does not exist; check the path") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{what} {path!r} is not a text file ({e}); it is damaged or of another kind. "
                     "Move it away to start over.") from None


def read_json(path, what="JSON file"):
  """Parses a JSON file, raising ValueError naming the file if it is corrupt.

  Only `json.loads` runs on the text: nothing in the file can execute.
  """
  text = read_text(path, what)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{what} {path!r} is not valid JSON ({e}); it may be truncated or foreign. "
                     "Move it away to start over.") from None


def read_json_object(path, what, file_format):
  """A JSON object whose "format" is `file_format`, or a ValueError naming the file.

  Args:
    path: the file.
    what: its kind in messages, e.g. "training state".
    file_format: the expected value of the "format" key, e.g.
      "tf_metaprune.TrainingState".
  """
  data = read_json(path, what)
  if not isinstance(data, dict) or data.get("format") != file_format:
    got = data.get("format") if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path!r} is not a {what} file (format={got!r}, expected {file_format!r}); "
                     "it is foreign, or another tool wrote it. It is left untouched: pass another path, "
                     "or move it away to start over.")
  return data


_LEFT_UNTOUCHED = "It is left untouched: pass another path, or move it away to start over."


def _short(value, limit=160):
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


class StateFile:
  """A resumable JSON state: its format, the identity that must match to resume, what may change.

  Every resumable file of tf_metaprune (the evolution and RL search states,
  the training checkpoint's state, the identity of a searcher's output
  folder, the pipeline's stages file) goes through this one helper, so a
  foreign, damaged or other-run file is refused with one message shape and
  left untouched, and a save is atomic and written by the chief only.

  On disk: `{"format": format, "version": 1, "identity": identity, **payload}`.

  Args:
    path: the JSON file.
    format: its "format" value, e.g. "tf_metaprune.EvolutionState".
    identity: JSON-able dict of what must be equal to resume (settings,
      fingerprints of space, weights and data).
    may_change: identity keys that may differ on resume, or "key.field" for
      one field of a dict-valued key (e.g. "config.num_generations").
    what: the file's kind in messages (default: the format's last part).
    labels: {identity key: words} naming keys in messages, e.g.
      {"budget": "the budget"}.
    chief: whether this process writes (`save` does nothing elsewhere).
    way_out: what the refusal says to do instead of the default "pass another
      path, or move it away to start over" (e.g. a run folder's "rerun with
      the same settings, or use a new output_dir").

  Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "state.json")
    >>> state = StateFile(path, "demo.State", {"seed": 0, "config": {"steps": 10}}, may_change=("config.steps",))
    >>> state.load() is None                      # nothing saved yet
    True
    >>> state.save(step=3)
    >>> StateFile(path, "demo.State", {"seed": 0, "config": {"steps": 20}}, may_change=("config.steps",)).load()
    {'step': 3}
    >>> StateFile(path, "demo.State", {"seed": 1, "config": {"steps": 10}}).load()
    Traceback (most recent call last):
    ...
    ValueError: state '...' belongs to another run: seed differs (saved 0, now 1). It is left untouched: ...
  """

  def __init__(self, path, format, identity, may_change=(), what=None, labels=None, chief=True,  # pylint: disable=redefined-builtin
               way_out=None):
    self.path = str(path)
    self.format = str(format)
    self.identity = json.loads(json.dumps(dict(identity)))   # as it reads back (tuples become lists)
    self.may_change = tuple(may_change)
    self.what = what or re.sub(r"(?<!^)(?=[A-Z])", " ", self.format.rsplit(".", 1)[-1]).lower()
    self.labels = dict(labels or {})
    self.chief = bool(chief)
    self.way_out = way_out

  def exists(self) -> bool:
    return os.path.exists(self.path)

  def _refuse(self, why):
    tail = _LEFT_UNTOUCHED if self.way_out is None else f"It is left untouched: {self.way_out}."
    return ValueError(f"{self.what} {self.path!r} {why}. {tail}")

  def damaged(self, error) -> ValueError:
    """The error for a payload the caller cannot read (raise it): names the file and the cause."""
    return self._refuse(f"is damaged ({type(error).__name__}: {error})")

  def _flat(self, identity):
    nested = {m.split(".", 1)[0] for m in self.may_change if "." in m}
    flat = {}
    for key, value in identity.items():
      if key in nested and isinstance(value, dict):
        flat.update({f"{key}.{k}": v for k, v in value.items()})
      else:
        flat[key] = value
    return flat

  def differences(self, saved_identity):
    """[(key, saved, now)] of the identity fields that differ and may not change."""
    saved, now = self._flat(saved_identity), self._flat(self.identity)
    keys = list(dict.fromkeys([k for k in now] + [k for k in saved]))
    return [(k, saved.get(k), now.get(k)) for k in keys
            if k not in self.may_change and saved.get(k) != now.get(k)]

  def load(self):
    """The saved payload (a dict, without format/version/identity), or None if there is no file.

    Raises:
      ValueError: one message shape, the file left untouched, if it is not
        JSON, not of this format ("foreign"), has no identity ("damaged"), or
        belongs to another run (names each differing field, saved and now).
    """
    if not self.exists():
      return None
    data = self._read()
    diff = self.differences(data["identity"])
    if diff:
      parts = [f"{self.labels.get(k, k)} differs (saved {_short(a)}, now {_short(b)})" for k, a, b in diff]
      allowed = f"; only {list(self.may_change)} may change on resume" if self.may_change else ""
      raise self._refuse(f"belongs to another run: {', '.join(parts)}{allowed}")
    return {k: v for k, v in data.items() if k not in ("format", "version", "identity")}

  def matches(self) -> bool:
    """Whether the file holds this run's identity (False: no file, or another run's -- redo the work).

    Raises:
      ValueError: for a foreign, not-JSON or damaged file (left untouched), as `load`.
    """
    return self.exists() and not self.differences(self._read()["identity"])

  def _read(self):
    text = read_text(self.path, self.what)
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise self._refuse(f"is not valid JSON ({e}): it is truncated or foreign") from None
    if not isinstance(data, dict) or data.get("format") != self.format:
      got = data.get("format") if isinstance(data, dict) else type(data).__name__
      article = "an" if self.what[:1] in "aeiou" else "a"
      raise self._refuse(f"is not {article} {self.what} file (format={got!r}, expected {self.format!r}): it is "
                         "foreign, or another tool wrote it")
    if not isinstance(data.get("identity"), dict):
      raise self.damaged(KeyError("identity"))
    return data

  def save(self, **payload):
    """Writes the state atomically (chief only): format, version, identity, then `payload`."""
    if not self.chief:
      return
    write_json_atomic(self.path, {"format": self.format, "version": 1, "identity": self.identity, **payload})
