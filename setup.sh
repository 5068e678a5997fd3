#!/usr/bin/env bash
# Set up (or reuse) the kit's virtualenv, then run the given command inside it:
#   bash setup.sh python build.py dry-run
#   bash setup.sh python -m pytest -q tests
# The venv lives outside the repo (PKK_VENV, default ~/.cache/pkk-venv) so fresh clones reuse it;
# it is reinstalled only when requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")"
venv="${PKK_VENV:-$HOME/.cache/pkk-venv}"
stamp="$venv/.pkk-requirements"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! cmp -s requirements.txt "$stamp"; then
  echo "setting up $venv (first time: a few minutes, torch is large)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r requirements.txt >&2
  cp requirements.txt "$stamp"
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
[ $# -eq 0 ] || exec "$@"
