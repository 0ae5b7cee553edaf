"""The Ray batch engine (`batch --engine ray`): `docread.batch.core`'s groups answered over a Ray cluster.

The core lists the work still owed (keys, resume, files that cannot be opened) in groups of up to
VISION_BATCH pages of one file; a pool of reader actors (the model loaded once per actor) answers each group
with the local engine; the driver alone writes the records, whole and once per key, in completion order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from docread.batch.core import run_batch
from docread.batch.engine import Engine, Group, Owed
from docread.batch.local import LocalEngine
from docread.document import open_for_reading
from docread.errors import DocreadError, UsageError
from docread.generate.sizing import AUTO
from docread.intake import Limits
from docread.jsonlines import JsonLinesLog
from docread.records import BatchRecord
from docread.settings import Settings

FAIL_ONCE_ENV = "DOCREAD_RAY_TEST_FAIL_ONCE"  # tests: the first reader to take a group exits, as if killed


def require_ray():
    """The `ray` module, or one line saying how to install it."""
    # Quiet unless the user asks otherwise: Ray Data's INFO lines and the driver's core-worker notices
    # (read once, at import and at ray.init) would bury the progress bar and the error lines.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    # The `(raylet)` lines Ray passes on (a worker killed, memory pressure) stay, without colour codes off a
    # terminal (Ray colours them whatever stderr is); Ray's UserWarnings and deprecations are not the user's.
    plain = os.environ.get("NO_COLOR") or not sys.stderr.isatty()
    os.environ.setdefault("RAY_COLOR_PREFIX", "0" if plain else "")
    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"ray(\.|$)")
    try:
        import ray
        import ray.data  # noqa: F401  the extra installs both; plain `ray` lacks Data's dependencies
    except ImportError:
        raise UsageError(
            "--engine ray needs Ray Data: pip install 'docread[ray]' (or 'ray[data]>=2.9')", code="missing_dependency"
        ) from None
    return ray


@dataclass(frozen=True)
class _ModelName:
    """What `Settings.fingerprint` reads of a reader, known on the driver without loading the model."""

    name: str
    adapter: str | None


def model_identity(model: str | None, adapter) -> _ModelName:
    from docread.model.presets import resolve_preset

    return _ModelName(resolve_preset(model).name, str(adapter) if adapter else None)


def refuse_stdin(files: Sequence[str]) -> None:
    if "-" in files:
        raise UsageError("--engine ray reads files by path on its workers: stdin (-) needs --engine local")


class RayEngine(Engine):
    """Answers on a Ray cluster: `workers` reader actors with `gpus_per_worker` GPUs each (0: CPU actors).
    `address` joins a running cluster ("auto", or HOST:PORT); without it a local Ray starts and stops with
    the run. Input paths must be readable at the same path on every node."""

    def __init__(
        self,
        *,
        model: str | None = None,
        adapter=None,
        device: str = "auto",
        quant: str = "auto",
        offline: bool | None = None,
        limits: Limits | None = None,
        workers: int = 1,
        gpus_per_worker: float = 0.0,
        address: str | None = None,
        batch_size: int | str = AUTO,
    ):
        self.ray = require_ray()
        if address is None and not self.ray.is_initialized():
            _check_local_cpus(workers)  # before Ray starts: a local Ray gives each reader a CPU of its own
        identity = model_identity(model, adapter)
        self.model, self.adapter = identity.name, identity.adapter
        self.reader_options = {"model": model, "adapter": adapter, "device": device, "quant": quant}
        self.reader_options.update(offline=offline, limits=limits, batch_size=batch_size)
        self.workers, self.gpus_per_worker, self.address = workers, gpus_per_worker, address

    def run(self, groups: Iterator[Group]) -> Iterator[dict]:
        """Every group listed first (the files open one at a time, here), then answered on the cluster;
        records in completion order (a group at a time)."""
        listed, first = [], None
        for group in groups:
            first = first or group
            owed = [[o.page.number, {q: o.keys[q] for q in o.questions}] for o in group.owed]
            listed.append(json.dumps({"file": group.document.name, "sha256": group.document.sha256, "owed": owed}))
            group.release()  # listed: the workers open the file themselves
        if not listed:
            return
        options = {**self.reader_options, "questions": first.questions, "settings": first.settings}
        options["digest"] = first.digest
        with contextlib.redirect_stdout(sys.stderr):  # Ray prints its workers' errors to stdout, where `-o -` writes
            yield from _run(self.ray, listed, self.address, self.workers, self.gpus_per_worker, options)


def run_batch_ray(files: Sequence[str], questions: Sequence[str], sink: JsonLinesLog, *, settings: Settings, **options):
    """`run_batch` with a `RayEngine`: `options` are RayEngine's and run_batch's (on_record, should_stop...)."""
    refuse_stdin(files)
    run_options = {k: options.pop(k) for k in ("on_record", "should_stop", "events", "on_resume") if k in options}
    engine = RayEngine(limits=options.get("limits"), **{k: v for k, v in options.items() if k != "limits"})
    return run_batch(engine, files, questions, sink, settings=settings, limits=options.get("limits"), **run_options)


def _run(ray, groups, address, workers, gpus_per_worker, reader_options) -> Iterator[dict]:
    """The readers on the cluster; each record they return, as it arrives."""
    started = _connect(ray, address, workers)
    try:
        _check_resources(ray, workers, gpus_per_worker)
        for row in _pipeline(ray, groups, workers, gpus_per_worker, reader_options):
            yield json.loads(row["record"])
    except ray.exceptions.RayError as e:
        cause = _reader_failure(e)
        why = f"a reader could not start: {cause}" if cause else f"{type(e).__name__}: {_first_line(e)}"
        raise DocreadError(
            "ray_failed",
            f"the Ray run failed ({why}); the records written so far are kept: fix the cause and rerun with --resume",
        ) from None
    finally:
        if started:
            ray.shutdown()


def _connect(ray, address: str | None, workers: int) -> bool:
    """Join the cluster at `address`, or start a local one, quietly; True when started here."""
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failed group: our one line says it (below)
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as e:
            raise DocreadError(
                "ray_unreachable",
                f"--ray-address {address}: no Ray cluster there "
                f"({_first_line(e)}); start one with `ray start --head`, or leave --ray-address out "
                "for a local Ray",
            ) from None
    else:
        ray.init(address="local", num_cpus=local_cpus(), **options)  # never a stray cluster
    return True


def local_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def _check_local_cpus(workers: int) -> None:
    cpus = local_cpus()
    if workers > cpus:
        raise UsageError(
            f"--workers {workers} needs {workers} CPUs (one per reader, each with its own model); this machine "
            f"has {cpus}: use --workers {cpus} or fewer, or join a bigger cluster with --ray-address"
        )


def _check_resources(ray, workers: int, gpus_per_worker: float) -> None:
    """Fail at once, not wait forever, when the cluster cannot hold the readers asked for."""
    have = ray.cluster_resources()
    gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
    if gpus_per_worker and workers * gpus_per_worker > gpus:
        raise UsageError(
            f"--workers {workers} --gpus-per-worker {gpus_per_worker:g} needs "
            f"{workers * gpus_per_worker:g} GPUs; the Ray cluster has {gpus:g}: ask for fewer"
        )
    if workers > cpus:
        raise UsageError(
            f"--workers {workers} needs {workers} CPUs (one per reader); the Ray cluster has {cpus:g}: ask for fewer"
        )


class ReaderFailed(Exception):
    """A reader's model did not load (DocreadError, with keyword arguments, does not cross processes)."""


def _reader_failure(error: BaseException) -> str | None:
    """The message of the ReaderFailed behind a Ray error, if one is."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ReaderFailed):
            return str(error)
        found = re.search(rf"{ReaderFailed.__name__}: (.+)", str(error))  # an actor's death carries it as text
        if found:
            return found.group(1).strip()
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None


def _pipeline(ray, groups: list[str], workers: int, gpus_per_worker: float, reader_options: dict):
    """Groups in, one row per record out, streamed as the readers finish them."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    dataset = ray.data.from_items([{"group": g} for g in groups], override_num_blocks=len(groups))
    # Ray Data restarts a reader actor that dies and retries the groups it held (max_restarts and
    # max_task_retries default to -1 for actor pools); the driver drops any record it already wrote.
    dataset = dataset.map_batches(
        _GroupReader,
        fn_constructor_kwargs=reader_options,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        num_gpus=gpus_per_worker or None,
    )
    return dataset.iter_rows()


class _GroupReader:
    """A Ray actor: the model loaded when its first group comes (one load per actor, as before; a reader
    lost before it took a group has cost no load), then each group answered by the local engine."""

    def __init__(self, *, model, adapter, device, quant, offline, questions, settings, limits, digest, batch_size):
        self.load_options = {"model": model, "adapter": adapter, "device": device, "quant": quant, "offline": offline}
        self.batch_size, self.engine = batch_size, None
        self.questions, self.settings, self.limits, self.digest = questions, settings, limits, digest

    def _engine(self) -> LocalEngine:
        if self.engine is None:
            from docread.loading import load

            try:
                reader = load(**self.load_options)
            except DocreadError as e:
                raise ReaderFailed(e.message) from None
            self.engine = LocalEngine(reader, self.batch_size)  # one batch plan (and its halvings) for all groups
        return self.engine

    def __call__(self, batch: dict) -> dict:
        _fail_once_for_tests()
        engine, records = self._engine(), []
        for group in batch["group"]:
            described = {**json.loads(group), "digest": self.digest}
            records.extend(answer_owed(engine, described, self.questions, self.settings, limits=self.limits))
        return {"record": [json.dumps(r, ensure_ascii=False) for r in records]}


def answer_owed(
    reader, group: dict, questions: Sequence[str], settings: Settings, *, limits: Limits | None = None
) -> list[dict]:
    """The records of one group described as the driver lists it ({file, sha256, owed: [[page, {question:
    key}]], digest}), answered by the local engine (`reader`: a DocReader, or a LocalEngine and its batch).
    Any failure becomes that group's error records: a bad page never fails the job."""
    file, sha = group["file"], group["sha256"]
    owed = {page: keyed for page, keyed in group["owed"]}
    records: list[dict] = []
    try:
        only = settings.replace(pages=",".join(map(str, owed)))
        with open_for_reading(file, settings=only, limits=limits) as document:
            if document.sha256 != sha:
                raise DocreadError("changed", f"{file} changed while the batch ran: rerun with --resume")
            work = [Owed(page, list(owed[page.number]), owed[page.number]) for page in document.pages]
            described = Group(document, work, list(questions), settings, group["digest"])
            engine = reader if isinstance(reader, LocalEngine) else LocalEngine(reader)
            records.extend(engine.answer(described))
    except Exception as e:  # noqa: BLE001  one group's failure (a file gone, a library error) is its records
        error = e if isinstance(e, DocreadError) else DocreadError("internal", f"{file}: {type(e).__name__}: {e}")
        written = {r["key"] for r in records}
        records += [
            BatchRecord.failed(
                key, file, sha, page, question, error, view=str(settings.view), settings=group["digest"]
            ).to_json()
            for page, keyed in owed.items()
            for question, key in keyed.items()
            if key not in written
        ]
    return records


def _fail_once_for_tests() -> None:
    """With FAIL_ONCE_ENV naming a file that does not exist yet: create it and die at once."""
    marker = os.environ.get(FAIL_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


__all__ = ["RayEngine", "answer_owed", "require_ray", "run_batch_ray"]
