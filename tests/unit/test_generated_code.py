"""The generated protobuf code matches protos/ (`make proto-check`), and the check can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos" / "tocsin" / "v1"
GENERATED = ROOT / "libs" / "common" / "tocsin" / "v1"
PYTHON = ROOT / ".venv" / "bin" / "python"


def python() -> str:
    return str(PYTHON) if PYTHON.exists() else sys.executable


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python(), str(root / "tools" / "genproto.py"), "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generated_code_is_up_to_date() -> None:
    result = run_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_every_proto_has_generated_modules() -> None:
    protos = sorted(PROTOS.glob("*.proto"))
    assert protos
    for proto in protos:
        stem = proto.stem
        assert (GENERATED / f"{stem}_pb2.py").is_file(), stem
        assert (GENERATED / f"{stem}_pb2.pyi").is_file(), stem
        has_service = any(line.startswith("service ") for line in proto.read_text().splitlines())
        assert (GENERATED / f"{stem}_pb2_grpc.py").is_file() == has_service, stem
    generated = {p.name.split("_pb2")[0] for p in GENERATED.glob("*_pb2*.py")}
    assert generated == {p.stem for p in protos}


def test_check_fails_when_a_proto_changes(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "genproto.py", tmp_path / "tools" / "genproto.py")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(
        ROOT / "libs" / "common" / "tocsin",
        tmp_path / "libs" / "common" / "tocsin",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    assert run_check(tmp_path).returncode == 0

    alert = tmp_path / "protos" / "tocsin" / "v1" / "alert.proto"
    text = alert.read_text()
    alert.write_text(
        text.replace("  string href = 1;\n", "  string href = 1;\n  int32 n = 9;\n", 1)
    )
    stale = run_check(tmp_path)
    assert stale.returncode == 1
    assert "differs: alert_pb2.py" in stale.stderr

    alert.write_text(text)
    (tmp_path / "libs" / "common" / "tocsin" / "v1" / "extra_pb2.py").write_text("")
    extra = run_check(tmp_path)
    assert extra.returncode == 1
    assert "not generated from protos/: extra_pb2.py" in extra.stderr
