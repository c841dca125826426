#!/usr/bin/env bash
# The two set-up commands of the README ("Two commands"), from the repository root:
#
#   ./setup.sh lab  [ARGS]   open the course (notebooks/00_start_here.ipynb) in JupyterLab (ARGS go to jupyter lab)
#   ./setup.sh test [ARGS]   run the whole test suite (ARGS go to pytest, e.g. ./setup.sh test -m browser)
#
# Each does everything on a fresh Debian/Ubuntu machine, CPU or GPU, and skips what is already done:
#
# 1. The Python environment: the active virtual environment when there is one (VIRTUAL_ENV set: a venv or
#    conda env you made yourself), otherwise .venv/ in the repository (git-ignored; made with `python3 -m venv`,
#    or $PYTHON -m venv; Python >= 3.10; python3 and python3-venv come from apt when missing).
# 2. torch, unless it imports already. With a GPU (nvidia-smi answers): `pip install torch`. Without one, a
#    CPU build, because plain `torch` would pull a multi-GB CUDA build: `pip install torch==2.13.0` where pip's
#    own configuration offers that version without any index (the course machines' local CPU wheel), else
#    torch from PyTorch's CPU index.
# 3. `pip install -e ".[test]"`, unless this script already did it in this environment for this checkout and
#    this pyproject.toml (a stamp file in the environment; delete it, or the environment, to force a re-install).
# 4. test only: Debian's chromium + chromium-driver (the browser tests) and npm (the course site's build) with
#    apt-get when missing, through sudo when not root. When that cannot be done the script says so and runs the
#    tests anyway: without Chromium the browser tests are skipped (and fail under CI), without npm the site
#    test fails with a message saying so.
# 5. `jupyter lab notebooks/00_start_here.ipynb` (with --allow-root as root), or `pytest`.
#
# Measured on a 2-core course machine (pip's configuration there offers a local CPU wheel of torch): a fresh
# .venv/ (2.3 GB) takes about 2.5 minutes to install; a second run starts JupyterLab or pytest within seconds.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

usage() { echo "usage: ./setup.sh lab|test [ARGS...]   (see the top of setup.sh)" >&2; exit 2; }
say() { echo "setup.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ $# -ge 1 ] || usage
VERB=$1; shift
case "$VERB" in lab|test) ;; *) usage ;; esac

SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
APT_UPDATED=
apt_install() {  # apt_install PACKAGE...: 0 when installed
    command -v apt-get >/dev/null || return 1
    if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq || return 1; APT_UPDATED=1; fi
    say "apt-get install $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. The Python environment ----------------------------------------------------------------------------------
if [ -n "${VIRTUAL_ENV:-}" ]; then
    ENV_DIR=$VIRTUAL_ENV
    say "using the active environment $ENV_DIR"
else
    ENV_DIR=$ROOT/.venv
    if ! "$ENV_DIR/bin/python" -m pip --version >/dev/null 2>&1; then
        BASE=${PYTHON:-python3}
        if ! command -v "$BASE" >/dev/null; then
            apt_install python3 python3-venv || die "no $BASE, and apt-get could not install python3: install Python >= 3.10"
        fi
        "$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || die "$BASE is Python $("$BASE" -c 'import platform; print(platform.python_version())'); tdnotebooks needs >= 3.10 (set PYTHON=python3.11, say)"
        rm -rf "$ENV_DIR"
        say "creating $ENV_DIR"
        if ! "$BASE" -m venv "$ENV_DIR" 2>/dev/null; then
            rm -rf "$ENV_DIR"
            apt_install python3-venv || die "$BASE -m venv failed and apt-get could not install python3-venv"
            "$BASE" -m venv "$ENV_DIR" || die "$BASE -m venv $ENV_DIR failed"
        fi
    fi
    export VIRTUAL_ENV=$ENV_DIR PATH="$ENV_DIR/bin:$PATH"
fi
PY=$ENV_DIR/bin/python
[ -x "$PY" ] || PY=python  # an active environment with another layout (conda on Windows, say)
pip() { "$PY" -m pip "$@"; }

# 2. torch -------------------------------------------------------------------------------------------------
if ! "$PY" -c 'import torch' 2>/dev/null; then
    if nvidia-smi >/dev/null 2>&1; then
        say "a GPU: pip install torch"
        pip install torch || die "pip install torch failed"
    elif pip install --dry-run --no-index --no-deps -q torch==2.13.0 >/dev/null 2>&1; then
        say "no GPU: pip install torch==2.13.0 (a CPU build pip's configuration offers)"
        pip install torch==2.13.0 || die "pip install torch==2.13.0 failed"
    else
        say "no GPU: torch from PyTorch's CPU index"
        pip install torch --index-url https://download.pytorch.org/whl/cpu \
            || die "pip install torch --index-url https://download.pytorch.org/whl/cpu failed"
    fi
fi

# 3. tdnotebooks and its test extra --------------------------------------------------------------------------
STAMP=$ENV_DIR/.tdnotebooks-setup
WANT="$ROOT $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] \
        || ! "$PY" -c 'import sys, tdnotebooks; sys.exit(not tdnotebooks.__file__.startswith(sys.argv[1]))' \
             "$ROOT/" 2>/dev/null; then
    say 'pip install -e ".[test]"'
    pip install -e ".[test]" || die 'pip install -e ".[test]" failed'
    echo "$WANT" >"$STAMP"
fi

# 4. and 5. ---------------------------------------------------------------------------------------------------
if [ "$VERB" = lab ]; then
    [ "$(id -u)" != 0 ] || set -- --allow-root "$@"  # JupyterLab refuses root otherwise (containers, CI machines)
    exec jupyter lab notebooks/00_start_here.ipynb "$@"
fi

MISSING=()
command -v chromium >/dev/null && command -v chromedriver >/dev/null || MISSING+=(chromium chromium-driver)
command -v npm >/dev/null || MISSING+=(npm)
if [ ${#MISSING[@]} -gt 0 ] && ! apt_install "${MISSING[@]}"; then
    say "WARNING: could not install ${MISSING[*]} with apt-get; running the tests anyway: without Chromium the" \
        "browser tests are skipped (and fail under CI), without npm the site test fails"
fi
exec pytest "$@"
