"""Where models are measured: this process, a remote board, an emulated aarch64 Python, or an
Android device over adb. Every target answers the `harness` request format.

Example:
  >>> target = Remote("ssh board")                      # the board has ai-edge-litert
  >>> reply = target.run(harness_request)                # same reply as Local().run(...)
"""

import abc
import json
import os
import pathlib
import shlex
import subprocess
import sys

from tflite_tools import harness

__all__ = ["Target", "Local", "Remote", "EmulatedAarch64", "TargetError", "aarch64_root",
           "define_flags", "from_options"]

_HARNESS_SOURCE = pathlib.Path(harness.__file__).read_text()


class TargetError(RuntimeError):
  """A target could not run the harness (missing Python/LiteRT, ssh failure, no device)."""


class Target(abc.ABC):
  """Runs `harness` requests somewhere."""

  #: Short name recorded in every result row.
  name = "target"
  #: False where timings are not the target's real latency (emulation).
  real_timings = True

  @abc.abstractmethod
  def run(self, request):
    """Answers one `harness` request (a dict) with its reply (a dict)."""


class _Process(Target):
  """Runs each request in a fresh Python process, so peak memory is the model's own."""

  @abc.abstractmethod
  def command(self):
    """The argv that starts the harness (it reads the request on stdin)."""

  def environment(self):
    """Extra environment variables for the local process (None: inherit)."""
    return None

  def run(self, request):
    env = self.environment()
    try:
      done = subprocess.run(self.command(), input=json.dumps(request), capture_output=True,
                            text=True, check=False,
                            env=None if env is None else {**os.environ, **env})
    except FileNotFoundError as e:
      raise TargetError(f"target {self.name!r}: cannot start {self.command()[0]!r}: {e}") from e
    if done.returncode != 0:
      raise TargetError(f"target {self.name!r} failed (exit {done.returncode}):\n"
                        f"{done.stderr.strip()[-2000:]}")
    try:
      return json.loads(done.stdout)
    except json.JSONDecodeError as e:
      raise TargetError(f"target {self.name!r} printed no harness reply: "
                        f"{done.stdout[-500:]!r}\n{done.stderr[-1500:]}") from e


class Local(_Process):
  """This machine: the harness in a child of this Python (numpy and LiteRT only, no TF)."""

  name = "local"

  def command(self):
    return [sys.executable, "-c", _HARNESS_SOURCE]


class Remote(_Process):
  """A Linux machine reached through a command prefix, e.g. ``ssh board``.

  The harness source is passed to ``<python> -c`` as one shell word appended to `prefix`, the
  request goes to its stdin; so ``ssh board`` works (ssh hands the word to the remote shell),
  and so does a local ``sh -c`` (what the tests use). The remote Python needs numpy and
  ai-edge-litert (both ship aarch64 wheels).

  Args:
    prefix: the command prefix, a string (split like a shell would) or a list.
    python: the Python to run there.
    name: recorded as the target in results (default: the prefix).
  """

  def __init__(self, prefix, python="python3", name=None):
    self.prefix = shlex.split(prefix) if isinstance(prefix, str) else list(prefix)
    self.python = python
    self.name = name or " ".join(self.prefix)

  def command(self):
    return self.prefix + [f"{self.python} -c {shlex.quote(_HARNESS_SOURCE)}"]


def aarch64_root():
  """Where scripts/aarch64_env.sh builds the emulated aarch64 Python."""
  return pathlib.Path(os.environ.get("KSLIM_AARCH64_ROOT")
                      or pathlib.Path.home() / ".cache" / "kslim" / "aarch64")


class EmulatedAarch64(Remote):
  """A real aarch64 Python with the aarch64 LiteRT wheel, under QEMU user-mode emulation.

  It exercises ARM kernels (XNNPACK's NEON int8 paths) on an x86 machine, so outputs can be
  compared with x86. Timings under emulation are not ARM latency: `real_timings` is False and
  the benchmark table says so.

  Args:
    root: the environment built by ``scripts/aarch64_env.sh`` (default `aarch64_root()`).
    qemu: the user-mode emulator.
  """

  name = "aarch64-emulated"
  real_timings = False

  def __init__(self, root=None, qemu="qemu-aarch64-static"):
    self.root = pathlib.Path(root) if root else aarch64_root()
    python = self.root / "sysroot" / "usr" / "bin" / "python3.11"
    if not python.is_file() or not (self.root / "site" / "ai_edge_litert").is_dir():
      raise TargetError(f"no emulated aarch64 Python in {self.root}: build it with "
                        "`bash scripts/aarch64_env.sh` (set KSLIM_AARCH64_ROOT to build "
                        "elsewhere)")
    super().__init__([qemu, "-L", str(self.root / "sysroot"), str(python)],
                     name=self.name)

  def command(self):
    # No shell in between: the emulated Python gets the source as its own argv word.
    return self.prefix + ["-c", _HARNESS_SOURCE]

  def environment(self):
    return {"PYTHONPATH": str(self.root / "site"), "PYTHONNOUSERSITE": "1"}


def define_flags():
  """Defines the binaries' shared --remote, --remote_python and --arch flags."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("arch", "native", ["native", "aarch64-emulated"],
                    "aarch64-emulated: run on an aarch64 Python under QEMU (built by "
                    "scripts/aarch64_env.sh); for correctness, not ARM timings.")
  flags.DEFINE_string("remote", None, "Command prefix reaching a Linux board with "
                      "ai-edge-litert, e.g. 'ssh board'.")
  flags.DEFINE_string("remote_python", "python3", "The Python on the --remote board.")


def from_options(remote=None, remote_python="python3", arch="native"):
  """The target the --remote / --arch flags name (this machine when neither is given)."""
  if remote and arch != "native":
    raise ValueError("--remote and --arch=aarch64-emulated exclude each other")
  if remote:
    return Remote(remote, python=remote_python)
  if arch == "aarch64-emulated":
    return EmulatedAarch64()
  return Local()
