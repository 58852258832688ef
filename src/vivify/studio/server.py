"""`vivify serve`: the studio's web app and API with its worker, on one machine."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

from vivify.errors import VivifyError
from vivify.studio.app import create_app
from vivify.studio.limits import DEFAULT_LIMITS, Limits
from vivify.studio.worker import Cluster, Worker


def studio_folder(folder: str | Path | None) -> Path:
    """The studio's data folder: the one given, else `studio` in vivify's data folder. Raises VivifyError when
    the path is taken by something that is not a folder."""
    from vivify.provenance.identity import data_dir

    path = Path(folder) if folder is not None else data_dir() / "studio"
    if path.exists() and not path.is_dir():
        raise VivifyError(f"{path}: not a folder (the studio keeps its data in one)")
    return path


def protected_identities(folder: Path):
    from vivify.studio.identities import ProtectedIdentities

    return ProtectedIdentities(folder / "protected.sqlite")


def cluster(address: str) -> Cluster:
    """A Ray cluster to render on: `local` or `local:N` starts one on this machine (N CPUs, default all),
    anything else is the address of a running cluster (e.g. `auto`, `ray://head:10001`). Its workers must
    see the studio's data folder at the same path (a shared filesystem)."""
    import ray

    from vivify.distributed import ray_runner

    if address == "local" or address.startswith("local:"):
        _, _, cpus = address.partition(":")
        run = ray_runner(None, **({"num_cpus": int(cpus)} if cpus else {}))
    else:
        _check_reachable(address)
        run = ray_runner(address)
    return Cluster(run, chunks=max(1, int(ray.cluster_resources().get("CPU", 1))))


# How long a cluster's head has to answer before `serve` gives up on it.
_CONNECT_SECONDS = 5.0


def _check_reachable(address: str) -> None:
    """Raise VivifyError where `address` names a host and port (`head:6379`, `ray://head:10001`) that does not
    answer: Ray itself retries an unreachable head for minutes, printing its own warnings."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return  # `auto` and the like: Ray finds the cluster its own way
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or f"no answer in {_CONNECT_SECONDS:g} s"
        raise VivifyError(f"--ray {address}: no Ray cluster answers there ({reason})") from None


def serve(host: str = "127.0.0.1", port: int = 8000, folder: str | Path | None = None,
          limits: Limits = DEFAULT_LIMITS, ray_address: str | None = None) -> None:
    """Serve until interrupted; jobs a stopped server was running are run again first. With `ray_address`,
    animations render in chunks on that Ray cluster."""
    import uvicorn

    folder = studio_folder(folder)
    lock = _lock_folder(folder)  # held (open) until the process ends
    # The studio's signing identity and audit log live in its own folder, with its jobs.
    os.environ["VIVIFY_DATA_DIR"] = str(folder)
    app = create_app(folder, limits, protected_identities(folder))
    studio = app.state.studio
    studio.identities.labels()  # a registry that cannot be read fails here, not at every upload
    requeued = studio.store.requeue_running()
    studio.remove_stray_uploads()
    ray_cluster = cluster(ray_address) if ray_address else None
    if ray_cluster is not None:
        app.state.renderer = f"ray, animations in {ray_cluster.chunks} chunks"
    worker = Worker(studio.store, studio.results, cluster=ray_cluster, identities=studio.identities)
    worker.start()
    print(f"vivify studio on http://{host}:{port}/ (data in {folder}; {requeued} interrupted job(s) queued again)",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        worker.stop(timeout=10)
        studio.store.close()
        os.close(lock)


def _lock_folder(folder: Path) -> int:
    """Hold the data folder for this server (a lock on a file descriptor kept open until the process ends). A
    second server on the same folder would take the first one's running jobs for interrupted ones: it would
    queue them again and delete their half-written outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = os.open(folder / "studio.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        raise VivifyError(f"{folder}: in use by another vivify serve (stop it, or give another --data-dir)") from None
    return lock
