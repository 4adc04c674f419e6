"""Generate Python code (messages, gRPC stubs, type stubs) from protos/ — `make proto`.

With --check, generate into a temporary folder and fail when it differs from what is
committed, so generated code can never drift from protos/ (`make proto-check`, in CI).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("tocsin") / "v1"
HEADER = (
    '"""Generated protobuf and gRPC code (`make proto`). Do not edit: change protos/ instead."""\n'
)


def generate(out_root: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    bin_dir = Path(sys.executable).parent  # protoc finds the mypy plugins on PATH
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            f"--mypy_out={out_root}",
            f"--mypy_grpc_out={out_root}",
            *sources,
        ],
        check=False,
        cwd=PROTOS,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,  # mypy-protobuf reports every file it writes
    )
    if result.returncode != 0:
        sys.exit(f"protoc failed:\n{result.stderr.decode()}")
    target = out_root / PACKAGE
    # Files without a `service` get empty gRPC modules: leave them out.
    for source in sources:
        if not re.search(r"^service\s", (PROTOS / source).read_text(), re.MULTILINE):
            stem = Path(source).stem
            for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
                (target / f"{stem}{suffix}").unlink(missing_ok=True)
    for init in (out_root / "tocsin" / "__init__.py", target / "__init__.py"):
        init.write_text(HEADER)
    (out_root / "tocsin" / "py.typed").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "libs" / "common")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    args.out = args.out.resolve()  # protoc runs in protos/
    committed = args.out / PACKAGE
    if not args.check:
        # Generate aside first: a protoc error must not leave the tree without its code.
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            if committed.exists():
                shutil.rmtree(committed)
            shutil.copytree(Path(tmp) / PACKAGE, committed)
            shutil.copy(Path(tmp) / "tocsin" / "__init__.py", args.out / "tocsin" / "__init__.py")
            shutil.copy(Path(tmp) / "tocsin" / "py.typed", args.out / "tocsin" / "py.typed")
        print(f"generated {committed}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PACKAGE
        stale = _differences(fresh, committed)
    if stale:
        print("generated code is stale against protos/ — run `make proto`:", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


def _differences(fresh: Path, committed: Path) -> list[str]:
    if not committed.exists():
        return [f"{committed} is missing"]
    comparison = filecmp.dircmp(fresh, committed, ignore=["__pycache__"])
    problems = [f"missing: {n}" for n in comparison.left_only]
    problems += [f"not generated from protos/: {n}" for n in comparison.right_only]
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, comparison.common_files, shallow=False)
    problems += [f"differs: {n}" for n in mismatch + errors]
    return sorted(problems)


if __name__ == "__main__":
    raise SystemExit(main())
