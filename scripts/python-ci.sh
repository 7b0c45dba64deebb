#!/usr/bin/env bash
# CI for the Python side: the nexus_memory package (python/) and, when present,
# nexus-mcp's conversation test driven by the official MCP Python SDK (mcp/tests).
# Builds nexusd (and nexus-mcp), keeps a venv in $TARGET/py-venv (re-created
# only when missing, test dependencies re-installed only when their list
# changes), installs python/ with pip (maturin is its build backend), type-checks
# the stubs and the example with mypy --strict, then runs the pytest suites.
# Rust lints of nexus-python come from the workspace clippy (it is a member).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

target_dir="${CARGO_TARGET_DIR:-target}"
venv="$target_dir/py-venv"
python="${PYTHON:-python3}"

step "build nexusd (and nexus-mcp when mcp/ exists)"
packages=(-p nexus-daemon)
if [[ -f mcp/Cargo.toml ]]; then
    packages+=(-p nexus-mcp)
fi
cargo build "${packages[@]}"

step "venv ($venv) and test dependencies"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
requirements=(pytest mypy numpy)
if [[ -f mcp/tests/requirements.txt ]]; then
    requirements+=(-r mcp/tests/requirements.txt)
fi
# Re-install only when the requirement list (or the mcp requirements file) changed.
stamp="$venv/.nexus-requirements"
wanted="$(printf '%s\n' "${requirements[@]}"; cat mcp/tests/requirements.txt 2>/dev/null || true)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "${requirements[@]}"
    printf '%s' "$wanted" >"$stamp"
fi

step "pip install ./python (maturin builds the extension)"
"$venv/bin/pip" install --quiet ./python

step "mypy --strict: the stubs and the example"
"$venv/bin/mypy" --strict --cache-dir "$target_dir/mypy-cache" python/nexus_memory.pyi python/examples/agent_loop.py

step "pytest"
export NEXUSD_BIN="${NEXUSD_BIN:-$PWD/$target_dir/debug/nexusd}"
export NEXUS_MCP_BIN="${NEXUS_MCP_BIN:-$PWD/$target_dir/debug/nexus-mcp}"
suites=(python/tests)
if [[ -d mcp/tests ]] && compgen -G 'mcp/tests/test_*.py' >/dev/null; then
    suites+=(mcp/tests)
fi
for suite in "${suites[@]}"; do
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$suite"
done
