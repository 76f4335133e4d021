#!/usr/bin/env bash
# One set-up path for `make demo` and `make test`, from a bare machine (Debian/Ubuntu, Python >= 3.10):
#   1. a virtual environment in .venv (HYBRIDVLA_VENV overrides the place);
#   2. real ROS 2 from PyPI (rclpy, Fast DDS, standard interfaces, colcon), torch==2.13.0 (CPU) and
#      the project's Python dependencies;
#   3. hybridvla_msgs (and the test-only stand-ins in test/interfaces) built with colcon, installed into the venv;
#   4. the project itself, editable.
# A second run with nothing changed only compares a fingerprint and exits.
# On a robot PC with ROS 2 installed, follow the README's "On the robot PC" instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${HYBRIDVLA_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

say() { printf '[setup] %s\n' "$*"; }

# Everything that changes what gets installed goes into the fingerprint.
interface_dirs=(hybridvla_msgs)
for d in test/interfaces/*/; do [ -f "$d/package.xml" ] && interface_dirs+=("${d%/}"); done
fingerprint=$( { echo "$TORCH_SPEC $VENV"; cat requirements.txt requirements-ros-pypi.txt setup.py setup.cfg \
  package.xml scripts/setup.sh; find "${interface_dirs[@]}" -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-16)
stamp=$VENV/.hybridvla-setup
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  say "up to date: $VENV (fingerprint $fingerprint)"
  exit 0
fi

start=$(date +%s)
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "[setup] error: Python >= 3.10 needed, $PYTHON is $("$PYTHON" --version)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
touch "$VENV/COLCON_IGNORE"   # colcon must never discover packages inside the venv
# pyrealsense2 loads the system libusb; Debian's minimal images lack it. Install it when we can (root + apt).
if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing libusb-1.0-0 (needed by pyrealsense2) with apt-get"
    apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null; } \
      || say "warning: could not install libusb-1.0-0: the RealSense backend and its tests will be unavailable"
  else
    say "warning: libusb-1.0 is missing (install libusb-1.0-0): the RealSense backend and its tests will be unavailable"
  fi
fi
export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH
# Quiet pip, minus the index-location warnings some machines' pip configuration prints.
pip_install() { python -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }

say "installing ROS 2 from PyPI (rclpy, Fast DDS, interfaces, colcon)"
pip_install -r requirements-ros-pypi.txt
say "installing $TORCH_SPEC and the Python dependencies"
pip_install "$TORCH_SPEC" -r requirements.txt "setuptools>=64,<80"

mkdir -p "$VENV/.colcon"
say "building ${interface_dirs[*]} with colcon (installed into the venv)"
export AMENT_PREFIX_PATH=$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
colcon --log-base "$VENV/.colcon/log" build \
  --base-paths "${interface_dirs[@]}" \
  --build-base "$VENV/.colcon/build" --install-base "$VENV" --merge-install \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
  --event-handlers console_cohesion- summary+ status- >"$VENV/.colcon/last-build.log" 2>&1 \
  || { tail -40 "$VENV/.colcon/last-build.log" >&2; echo "[setup] error: colcon build failed, full log: $VENV/.colcon/last-build.log" >&2; exit 1; }

say "installing the project (editable): hybridvla_core, hybridvla_ros, the hybridvla CLI and the node executables"
pip_install --no-deps --no-build-isolation -e .

python - <<'PY'
import importlib
for mod in ("rclpy", "hybridvla_msgs.msg", "torch", "transformers", "mujoco", "rosbags", "mcap", "mcap_ros2", "hybridvla_core"):
    importlib.import_module(mod)
PY
echo "$fingerprint" >"$stamp"
say "done in $(( $(date +%s) - start )) s: venv $VENV, ROS 2 $(python -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))') (PyPI), torch $(python -c 'import torch; print(torch.__version__)'), hybridvla_msgs built and installed"
