"""A quantized copy of a base in docread's cache: after the first 4-bit load the model is saved
(bitsandbytes serialisation through transformers' `save_pretrained`, safetensors only), and later
loads read ~4 GB of quantized weights instead of reading 14 GB and quantizing them again.

An entry is a folder `cache_dir("quantized", NAME)` holding config.json, the safetensors and a
manifest (key, sizes of every file, sha256 of the small ones). It is keyed by the base's revision,
the quant settings and the docread/transformers/bitsandbytes versions; one that does not verify
(missing or truncated file, unreadable safetensors header, other key) is rebuilt, never loaded.
Entries are written to a temporary folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

CACHED_MODES = ("4bit",)  # bitsandbytes NF4 serialises; 8-bit stays load-and-quantize
MANIFEST = "docread-manifest.json"
FORMAT = 1  # of the manifest; a new one makes every older entry stale
HASHED_MAX_BYTES = 1 << 20  # files up to 1 MiB get a sha256 in the manifest; larger ones a size
SAFETENSORS_HEADER_MAX = 100 << 20  # a header longer than this is damage, not a model
KEY_CHARS = 16  # hex characters of the key shown in names and listings
CACHE_SWITCH_ENV = "DOCREAD_QCACHE"  # "0"/"off": never read or write entries; "refresh": rebuild


@dataclass(frozen=True)
class Entry:
    """One cached quantized copy."""

    name: str  # folder name: <base>-<mode>-<key>
    path: Path
    key: str
    base: str  # what it was made from
    size: int  # bytes on disk


def root() -> Path:
    from docread.model.paths import cache_dir

    return cache_dir("quantized")


def switch() -> str:
    """ "on", "off" or "refresh", from $DOCREAD_QCACHE."""
    value = os.environ.get(CACHE_SWITCH_ENV, "").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    return "refresh" if value == "refresh" else "on"


# -- the key ------------------------------------------------------------------------------------------
def base_revision(folder: Path) -> str:
    """What identifies the base's weights: the commit of an HF-cache snapshot (its safetensors resolve
    to content-addressed blobs), else a hash of config.json, the safetensors index and each weights
    file's name, size, mtime and header (a full hash of 14 GB would cost more than it saves)."""
    digest = hashlib.sha256()
    if folder.parent.name == "snapshots":
        digest.update(f"hf-snapshot:{folder.name}\n".encode())
        for path in sorted(folder.glob("*.safetensors")):
            digest.update(f"{path.name}:{path.resolve().name}\n".encode())
        return digest.hexdigest()
    for name in ("config.json", "model.safetensors.index.json"):
        if (folder / name).is_file():
            digest.update(name.encode() + b"\n" + (folder / name).read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        digest.update(_header_bytes(path) or b"")
    return digest.hexdigest()


def key_inputs(folder: Path, mode: str, dtype, skip_modules: list[str]) -> dict:
    """Everything an entry depends on; its sha256 is the key."""
    return {
        "format": FORMAT,
        "revision": base_revision(folder),
        "mode": mode,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": str(dtype).removeprefix("torch."),
        "skip_modules": list(skip_modules),
        "docread": _version("docread"),
        "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"),
    }


def make_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def entry_name(base: str, mode: str, key: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base.strip("/").replace("/", "--"))[-60:].strip("-.") or "model"
    return f"{slug}-{mode}-{key[:KEY_CHARS]}"


# -- verifying -----------------------------------------------------------------------------------------
def verify(path: Path, key: str) -> str | None:
    """None if the entry at `path` is whole and made for `key`, else why not (one line)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"manifest unreadable ({type(e).__name__})"
    if manifest.get("key") != key:
        return "made for another key (base, settings or versions changed)"
    files = manifest.get("files") or {}
    if "config.json" not in files or not any(n.endswith(".safetensors") for n in files):
        return "manifest lists no config.json or no weights"
    for name, facts in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != facts.get("size"):
            return f"{name} has {file.stat().st_size} bytes, not {facts.get('size')}"
        if "sha256" in facts and _sha256(file) != facts["sha256"]:
            return f"{name} does not match its checksum"
        if name.endswith(".safetensors") and not _safetensors_whole(file):
            return f"{name}: safetensors header unreadable or data cut short"
    return None


def _header_bytes(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                return None
            (length,) = struct.unpack("<Q", raw)
            if length > SAFETENSORS_HEADER_MAX:
                return None
            header = f.read(length)
            return header if len(header) == length else None
    except OSError:
        return None


def _safetensors_whole(path: Path) -> bool:
    """The header parses and the tensors it lists end exactly at the end of the file."""
    header = _header_bytes(path)
    if header is None:
        return False
    try:
        tensors = json.loads(header)
        end = max((int(v["data_offsets"][1]) for k, v in tensors.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return False
    return 8 + len(header) + end == path.stat().st_size


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# -- reading and writing -------------------------------------------------------------------------------
def lookup(base: str, key: str, mode: str) -> tuple[Path, str | None]:
    """The entry's folder and None if it can be loaded, else why not ("absent" when there is none)."""
    path = root() / entry_name(base, mode, key)
    if not path.exists():
        return path, "absent"
    return path, verify(path, key)


def save(model, path: Path, *, key: str, inputs: dict, base: str) -> Path:
    """Write `model` (quantized, not yet run on CPU) as the entry at `path`: into a temporary folder
    beside it, manifest last, then renamed into place; a damaged entry there is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(temp, safe_serialization=True)
        files = {}
        for file in sorted(temp.iterdir()):
            facts = {"size": file.stat().st_size}
            if facts["size"] <= HASHED_MAX_BYTES:
                facts["sha256"] = _sha256(file)
            files[file.name] = facts
        manifest = {"format": FORMAT, "key": key, "base": base, "inputs": inputs, "files": files}
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if path.exists():
            _remove(path)
        try:
            temp.rename(path)
        except OSError:  # another process put a fresh entry there first: keep theirs
            if verify(path, key) is not None:
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return path


def _remove(path: Path) -> None:
    """Move aside, then delete: a reader never sees a half-deleted entry under the real name."""
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def entries() -> list[Entry]:
    """The cached quantized copies, by name (temporary and damaged folders included, key '?')."""
    folder = root()
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            manifest = {}
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        found.append(
            Entry(path.name, path, str(manifest.get("key", "?"))[:KEY_CHARS], str(manifest.get("base", "?")), size)
        )
    return found


def clear(name: str | None = None) -> list[str]:
    """Remove the entry `name` (a folder name or a prefix of one), or every entry; the names removed."""
    folder = root()
    gone = [e for e in entries() if name is None or e.name == name or e.name.startswith(name)]
    for entry in gone:
        _remove(entry.path)
    if name is None and folder.is_dir():  # leftovers of interrupted writes
        for path in folder.glob(".t*-*"):
            shutil.rmtree(path, ignore_errors=True)
    return [e.name for e in gone]
