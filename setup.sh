#!/usr/bin/env bash
# Set up (or reuse) the kit's virtualenv, then run the given command inside it:
#   bash setup.sh python build.py dry-run
#   bash setup.sh python -m pytest -q tests
# The venv lives outside the repo (PKK_VENV, default ~/.cache/pkk-venv) so fresh clones reuse it;
# it is reinstalled only when requirements.txt changes.
# PKK_ENV=kaggle: instead, the Kaggle-versions env (PKK_KAGGLE_VENV, default ~/.cache/pkk-kaggle-venv):
# Python 3.12 and the versions pinned in kaggle-image.txt, reinstalled only when that file changes.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${PKK_ENV:-}" = kaggle ]; then
  venv="${PKK_KAGGLE_VENV:-$HOME/.cache/pkk-kaggle-venv}" reqs=kaggle-image.txt
  py=python3.12  # on PATH, else pyenv's newest 3.12 (pyenv's shim is on PATH even when it cannot run)
  "$py" -c '' 2>/dev/null || py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python 2>/dev/null | sort -V | tail -1) || true
  [ -x "$venv/bin/python" ] || [ -n "$py" ] || { echo "error: PKK_ENV=kaggle needs Python 3.12; install it (e.g. pyenv install 3.12) so that python3.12 runs" >&2; exit 2; }
else
  venv="${PKK_VENV:-$HOME/.cache/pkk-venv}" reqs=requirements.txt py=python3
fi
stamp="$venv/.pkk-requirements"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
if ! cmp -s "$reqs" "$stamp"; then
  echo "setting up $venv from $reqs (first time: a few minutes, torch is large)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$reqs" >&2
  cp "$reqs" "$stamp"
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
[ $# -eq 0 ] || exec "$@"
