"""The event contracts: lint-clean, generated code in step with proto/, and wire compatible
with the released contracts (proto/released/, the image of the last released version)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROTO = ROOT / "proto"
BUF = Path(sys.executable).parent / "buf"
RELEASED = PROTO / "released" / "reflexe-v1.binpb"


def buf(*args: str, cwd: Path = PROTO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_passes():
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_what_the_script_generates(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    committed = ROOT / "libs" / "common" / "src" / "reflexe"
    comparison = filecmp.dircmp(tmp_path / "reflexe", committed, ignore=["__pycache__"])
    for sub in [comparison, *comparison.subdirs.values()]:
        assert not sub.left_only and not sub.right_only, (sub.left_only, sub.right_only)
        _, mismatch, errors = filecmp.cmpfiles(sub.left, sub.right, sub.common_files, shallow=False)
        assert not mismatch and not errors, f"regenerate with ./reflexe gen-proto: {mismatch}"


def test_contracts_are_wire_compatible_with_the_released_ones():
    result = buf("breaking", "--against", str(RELEASED))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("edit", [
    ("string offer_id = 2;\n  string had_finess = 3;\n  google.protobuf.Timestamp hold_until = 4;",
     "string offer_id = 2;\n  int64 had_finess = 3;\n  google.protobuf.Timestamp hold_until = 4;"),  # a type change
    ("  string pseudonym = 1;\n", ""),  # a field removed
])
def test_the_check_catches_a_breaking_change(tmp_path, edit):
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy)
    referral = copy / "reflexe" / "v1" / "referral.proto"
    old, new = edit
    text = referral.read_text()
    assert old in text
    referral.write_text(text.replace(old, new, 1))
    result = buf("breaking", "--against", str(RELEASED), cwd=copy)
    assert result.returncode != 0, "a breaking change went unnoticed"
