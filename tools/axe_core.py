"""axe-core, the accessibility engine of the console's browser tests, at a pinned version.

It is taken from the npm registry with npm's own client (``npm pack``: a download, no
package scripts run, no Node at the console's run time) into ``.cache/axe-core/``, the
tarball checked against its pinned SHA-256 and ``axe.min.js`` (MPL-2.0) taken out of it.
The tests inject that file through WebDriver (the page's CSP does not apply to it).

    python tools/axe_core.py      # fetch it once (also done by ``devstack.py fetch``)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "4.14.1"
TARBALL_SHA256 = "e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745"
SCRIPT_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".cache" / "axe-core" / f"axe-{VERSION}.min.js"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_axe_core() -> Path:
    """The path of axe.min.js at the pinned version, fetched once; its checksum is checked
    every time (a changed file is fetched again)."""
    if SCRIPT.exists() and _sha256(SCRIPT.read_bytes()) == SCRIPT_SHA256:
        return SCRIPT
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("axe-core: npm (Debian's `npm` package) is needed to fetch it from the registry")
    print(f"[axe-core] fetching axe-core {VERSION} from the npm registry (once)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", f"axe-core@{VERSION}", "--pack-destination", tmp, "--silent"],
            check=True,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        tarball = Path(tmp) / f"axe-core-{VERSION}.tgz"
        got = _sha256(tarball.read_bytes())
        if got != TARBALL_SHA256:
            sys.exit(f"axe-core: {tarball.name} has SHA-256 {got}, pinned {TARBALL_SHA256}")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None
            script = member.read()
    if _sha256(script) != SCRIPT_SHA256:
        sys.exit("axe-core: axe.min.js does not match its pinned SHA-256")
    SCRIPT.parent.mkdir(parents=True, exist_ok=True)
    SCRIPT.write_bytes(script)
    return SCRIPT


if __name__ == "__main__":
    print(ensure_axe_core())
