#!/usr/bin/env python3
"""Builds the Python package's wheel with libmeridian.so inside it (no build backend, no
network): ``python3 scripts/python-wheel.py LIB OUT_DIR`` writes
``OUT_DIR/meridian-<version>-py3-none-linux_<arch>.whl`` and prints its path. ``pip install``
of that wheel needs no environment variable: the package loads the library beside it."""

import base64
import hashlib
import os
import platform
import re
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(HERE, "..", "bindings", "python")


def version() -> str:
    with open(os.path.join(PACKAGE, "pyproject.toml")) as f:
        match = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
    if not match:
        sys.exit("pyproject.toml names no version")
    return match.group(1)


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lib, out_dir = sys.argv[1], sys.argv[2]
    ver = version()
    tag = f"py3-none-linux_{platform.machine()}"
    dist = f"meridian-{ver}.dist-info"
    files = {}
    source = os.path.join(PACKAGE, "meridian")
    for name in sorted(os.listdir(source)):
        if name.endswith(".py") or name == "py.typed":
            with open(os.path.join(source, name), "rb") as f:
                files[f"meridian/{name}"] = f.read()
    with open(lib, "rb") as f:
        files["meridian/libmeridian.so"] = f.read()
    files[f"{dist}/METADATA"] = (
        "Metadata-Version: 2.1\n"
        f"Name: meridian\nVersion: {ver}\n"
        "Summary: Meridian from Python: embedded engines and routed clients over the C ABI\n"
        "Requires-Python: >=3.8\nLicense: Apache-2.0\n"
    ).encode()
    files[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: meridian scripts/python-wheel.py\n"
        f"Root-Is-Purelib: false\nTag: {tag}\n"
    ).encode()
    record = [record_line(n, d) for n, d in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"meridian-{ver}-{tag}.whl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            wheel.writestr(info, data, zipfile.ZIP_DEFLATED)
    print(path)


if __name__ == "__main__":
    main()
