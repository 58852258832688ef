"""vivify studio: the REST API against a real server on 127.0.0.1 (a free port), its durable queue (a server
killed with SIGKILL mid-job and restarted), consent, limits and the protected-identity gate."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
from conftest import SHARED_MEDIA, encode_clip
from PIL import Image

from vivify.demo import astronaut, face_crop
from vivify.progress import PICKING, RENDERING
from vivify.provenance.audit import read_records
from vivify.provenance.verify import verify

_TIMEOUT = 240.0  # s: the most a test waits for a job (a 2-core machine under load)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _vivify(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "vivify.cli", *args], capture_output=True, text=True, check=True)
    return done.stdout


class Server:
    """`vivify serve` in a child process, on its own data folder and port."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.folder = folder
        self.options = options
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        with open(self.folder / "server.log", "ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vivify.cli", "serve", "--port", str(self.port), "--data-dir",
                 str(self.folder), *self.options], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, (self.folder / "server.log").read_text()
            time.sleep(0.2)
        raise AssertionError("the server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def user(self, name: str) -> dict[str, str]:
        token = _vivify("users", "add", name, "--data-dir", str(self.folder)).strip().splitlines()[-1]
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("studio-input") / "astronaut.png"
    Image.fromarray(face_crop(256)).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("studio")).start()
    yield running
    running.stop()


def _submit(server: Server, headers: dict, kind: str = "animate", portraits: tuple[Path, ...] = (),
            consent: str | None = "true", driving: Path | None = None, **fields: str) -> httpx.Response:
    files = [("portrait", (p.name, p.read_bytes(), "image/png")) for p in portraits]
    if driving is not None:
        files.append(("driving", (driving.name, driving.read_bytes(), "video/mp4")))
    data = {"kind": kind, **fields} | ({"consent": consent} if consent is not None else {})
    return httpx.post(f"{server.url}/api/jobs", headers=headers, data=data, files=files or None, timeout=120)


def _wait(server: Server, headers: dict, job_id: str, until: tuple[str, ...] = ("done", "failed")) -> dict:
    deadline = time.monotonic() + _TIMEOUT
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        assert 0.0 <= job["progress"] <= 1.0
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {until}")


def test_health_and_tokens(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "renderer": "this process"}
    assert httpx.get(f"{server.url}/api/jobs").status_code == 401
    bad = httpx.get(f"{server.url}/api/jobs", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server.url}/docs").status_code == 200
    # The OpenAPI page can call the API: it knows the token scheme and the fields of a new job.
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert [scheme["scheme"] for scheme in schema["components"]["securitySchemes"].values()] == ["bearer"]
    form = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert sorted(form["properties"]) == ["audio", "consent", "driving", "kind", "lang", "portrait", "template",
                                          "text"]
    headers = server.user("olga")
    assert httpx.get(f"{server.url}/api/jobs", headers={"Authorization": "bearer " + headers["Authorization"][7:]}
                     ).json() == {"jobs": []}


def test_animate_job_from_upload_to_marked_result(server, portrait, tmp_path):
    alice, bob = server.user("alice"), server.user("bob")
    created = _submit(server, alice, portraits=(portrait,), template="nod")
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json() == {"id": job_id, "status": "queued"}
    job = _wait(server, alice, job_id)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["inputs"] == ["astronaut.png", "nod.mp4"]
    result = httpx.get(f"{server.url}/api/jobs/{job_id}/result", headers=alice, timeout=30)
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    video = tmp_path / "result.mp4"
    video.write_bytes(result.content)
    report = verify(video)
    assert report["ai_generated"] and report["c2pa"]["found"] and report["watermark"]["found"]
    assert [j["id"] for j in httpx.get(f"{server.url}/api/jobs", headers=alice).json()["jobs"]] == [job_id]
    # Another user sees nothing of it: 404, never 403, and no data.
    for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
        answer = httpx.request(method, f"{server.url}/api/jobs/{job_id}{path}", headers=bob)
        assert answer.status_code == 404 and job_id not in answer.text
    assert httpx.get(f"{server.url}/api/jobs", headers=bob).json() == {"jobs": []}
    # The consent was recorded, with the user and the time, in the job's audit trail.
    consent = [r for r in read_records(server.folder) if r.get("event") == "consent" and r["job"] == job_id]
    assert len(consent) == 1 and consent[0]["user"] == "alice" and consent[0]["consent"]["confirmed"] is True
    made = [r for r in read_records(server.folder) if r.get("options", {}).get("job") == job_id]
    assert len(made) == 1
    assert httpx.delete(f"{server.url}/api/jobs/{job_id}", headers=alice).status_code == 204
    assert httpx.get(f"{server.url}/api/jobs/{job_id}", headers=alice).status_code == 404
    assert not (server.folder / "results" / f"{job_id}.mp4").exists()
    assert not (server.folder / "uploads" / job_id).exists()


@pytest.mark.parametrize("fields, status, message", [
    ({"consent": None}, 400, "consent is required"),
    ({"consent": "no"}, 400, "consent is required"),
    ({"kind": "paint"}, 422, "kind must be one of animate, sing, speak, dub"),
    ({"template": "nope"}, 422, "no template 'nope'"),
    ({"template": ""}, 422, "animate needs a video (field driving or template)"),
    ({"kind": "speak", "text": "Hello", "lang": "klingon"}, 422, "unsupported language 'klingon'; available: "),
    ({"kind": "speak", "text": "<speak>Hello <break time='1s'></speak>"}, 422,
     "the SSML text is not well-formed XML: <break> is still open at the end tag at line 1, column 33"),
    ({"kind": "speak", "text": "<speak/>"}, 422, "nothing to say: the text has no word that espeak-ng speaks"),
])
def test_bad_requests(server, portrait, fields, status, message):
    headers = server.user(f"user{status}{len(message)}{fields.get('consent')}")
    answer = _submit(server, headers, portraits=(portrait,), **({"template": "nod"} | fields))
    assert answer.status_code == status and message in answer.json()["detail"]
    assert httpx.get(f"{server.url}/api/jobs", headers=headers).json() == {"jobs": []}


@pytest.fixture(scope="module")
def wall(tmp_path_factory) -> Path:
    """A picture without a face: a plain wall."""
    path = tmp_path_factory.mktemp("studio-wall") / "wall.png"
    Image.fromarray(np.full((200, 160, 3), (200, 190, 170), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("kind", "fields"), [
    ("animate", {"template": "nod"}),
    ("sing", {"template": "nod"}),  # with a portrait that has a face first: the faceless one is named
    ("speak", {"text": "Hello"}),
])
def test_a_portrait_without_a_face_is_refused_at_upload(server, portrait, wall, kind, fields):
    """It was accepted, and the job failed when it ran (the engine's face search found nothing)."""
    headers = server.user(f"faceless{kind}")
    portraits = (portrait, wall) if kind == "sing" else (wall,)
    answer = _submit(server, headers, kind, portraits, **fields)
    assert (answer.status_code, answer.json()["detail"]) == (422, "no face found in wall.png")
    assert httpx.get(f"{server.url}/api/jobs", headers=headers).json() == {"jobs": []}
    assert not list((server.folder / "uploads").glob("*/*/wall.png"))  # nothing of it is kept


def test_a_portrait_with_a_face_under_the_minimum_is_refused_at_upload(server, tmp_path):
    """It was accepted, and the job failed when it ran."""
    small = tmp_path / "small.png"
    Image.fromarray(cv2.resize(astronaut()[40:240, 130:330], (64, 64), interpolation=cv2.INTER_AREA)).save(small)
    headers = server.user("smallface")
    answer = _submit(server, headers, "animate", (small,), template="nod")
    assert answer.status_code == 422
    assert re.fullmatch(r"small\.png: face is \d+ px tall, under the minimum of 48 px", answer.json()["detail"])
    assert httpx.get(f"{server.url}/api/jobs", headers=headers).json() == {"jobs": []}


@pytest.mark.parametrize("field", ["kind", "consent", "template"])
def test_a_text_field_sent_as_a_file_is_refused_by_name(server, portrait, field):
    # The message showed Starlette's upload object: "kind must be one of ..., not 'UploadFile(filename=...'".
    headers = server.user(f"filer{field}")
    data = {name: value for name, value in {"kind": "animate", "consent": "true", "template": "nod"}.items()
            if name != field}
    files = [("portrait", (portrait.name, portrait.read_bytes(), "image/png")),
             (field, ("field.txt", b"animate", "text/plain"))]
    answer = httpx.post(f"{server.url}/api/jobs", headers=headers, data=data, files=files, timeout=120)
    assert (answer.status_code, answer.json()["detail"]) == (422, f"field {field} must be text, not a file")


def test_invalid_and_wrong_count_uploads(server, portrait, tmp_path):
    headers = server.user("carol")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture at all")
    answer = _submit(server, headers, portraits=(broken,), template="nod")
    assert answer.status_code == 422 and answer.json()["detail"].startswith("broken.png: ")
    answer = _submit(server, headers, portraits=(portrait, portrait), template="nod")
    assert answer.status_code == 422 and answer.json()["detail"] == "animate takes 1 portrait, not 2"
    # A driving video without a face is accepted (the engine looks for one in every frame as the job runs) and
    # fails there; its result says why.
    empty = encode_clip(tmp_path / "empty room.mp4", [np.full((128, 128, 3), 120, np.uint8)] * 10)
    job_id = _submit(server, headers, portraits=(portrait,), driving=empty).json()["id"]
    assert _wait(server, headers, job_id)["status"] == "failed"
    answer = httpx.get(f"{server.url}/api/jobs/{job_id}/result", headers=headers)
    assert answer.status_code == 409
    assert answer.json()["detail"] == (f"job {job_id} failed, so it has no result: empty_room.mp4: no face found "
                                       "in any frame")


def test_limits(tmp_path, portrait):
    server = Server(tmp_path, "--max-upload-mb", "1", "--max-jobs", "1", "--max-megapixels", "0.07",
                    "--max-seconds", "5").start()
    try:
        headers = server.user("dave")
        wide = tmp_path / "wide.png"  # 0.09 megapixels (the portrait is 0.066), and a header that says so
        Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(wide)
        answer = _submit(server, headers, portraits=(wide,), template="nod")
        assert answer.status_code == 413
        assert answer.json()["detail"] == "wide.png: image is 0.09 megapixels, over the 0.07 megapixel limit"
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)).save(big)
        answer = _submit(server, headers, portraits=(big,), template="nod")
        assert answer.status_code == 413 and "over the limit of 1 MiB" in answer.json()["detail"]
        # A body sent in chunks declares no size, so it could be of any: refused before it is read.
        chunked = httpx.post(f"{server.url}/api/jobs", headers=headers, content=iter([b"x" * 4096] * 512))
        assert chunked.status_code == 411 and "size declared" in chunked.json()["detail"]
        # The 6 s template is the studio's own: not held to the 5 s limit. A name in any script stays readable.
        named = tmp_path / "照片 Ünï.png"
        shutil.copy(portrait, named)
        created = _submit(server, headers, portraits=(named,), template="nod")
        assert created.status_code == 201, created.text
        job = httpx.get(f"{server.url}/api/jobs/{created.json()['id']}", headers=headers).json()
        assert job["inputs"] == ["照片_Ünï.png", "nod.mp4"]
        answer = _submit(server, headers, portraits=(portrait,), template="nod")
        assert answer.status_code == 429
        assert answer.json()["detail"] == ("you have 1 jobs waiting, and 1 are allowed: wait for one to finish or "
                                           "delete one")
    finally:
        server.stop()


def test_a_killed_server_finishes_every_accepted_job_once(tmp_path, portrait):
    server = Server(tmp_path).start()
    headers = server.user("erin")
    first = _submit(server, headers, portraits=(portrait,), template="nod").json()["id"]
    second = _submit(server, headers, "speak", (portrait,), text="Hello, I waited in the queue.").json()["id"]
    _wait(server, headers, first, until=("running", "done"))
    server.kill()  # SIGKILL: no clean-up of any kind
    server.start()
    try:
        for job_id in (first, second):
            assert _wait(server, headers, job_id)["status"] == "done"
        jobs = httpx.get(f"{server.url}/api/jobs", headers=headers).json()["jobs"]
        assert sorted(j["id"] for j in jobs) == sorted((first, second))
        made = [r["options"]["job"] for r in read_records(tmp_path) if "job" in r.get("options", {})]
        assert sorted(made) == sorted((first, second))  # each made exactly once
        assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(f"{j}.mp4" for j in made)
    finally:
        server.stop()


@pytest.mark.skipif(not (SHARED_MEDIA / "portraits" / "einstein.jpg").exists(), reason="shared media absent")
def test_protected_identity_is_refused(tmp_path, portrait):
    registered = tmp_path / "registered.png"
    Image.fromarray(face_crop(512)).save(registered)
    assert "protected" in _vivify("protect", "add", "Astronaut", str(registered), "--data-dir", str(tmp_path))
    assert _vivify("protect", "list", "--data-dir", str(tmp_path)).startswith("Astronaut\t")
    server = Server(tmp_path).start()
    try:
        headers = server.user("frank")
        # Another picture of her (smaller, cropped differently) is refused; someone else passes.
        answer = _submit(server, headers, portraits=(portrait,), template="nod")
        assert answer.status_code == 403
        assert answer.json()["detail"] == ("astronaut.png: the face is a protected identity (Astronaut) and may "
                                           "not be animated")
        other = _submit(server, headers, portraits=(SHARED_MEDIA / "portraits" / "einstein.jpg",), template="nod")
        assert other.status_code == 201, other.text
    finally:
        server.stop()


def test_a_portrait_is_searched_for_faces_once_with_the_gate_on(tmp_path, portrait, wall, monkeypatch):
    """The upload check looks for the portrait's faces with the engine's search and hands them to the identity
    gate, which looked for them again; the gate still refuses a protected face, and a faceless portrait is
    refused by name."""
    from fastapi import HTTPException

    import vivify.landmarks.facemesh as facemesh
    from vivify.studio import app as app_module
    from vivify.studio.identities import ProtectedIdentities
    from vivify.studio.limits import DEFAULT_LIMITS

    identities = ProtectedIdentities(tmp_path / "protected.sqlite")
    identities.add("Astronaut", face_crop(512))
    searched: list[tuple[int, ...]] = []
    search = facemesh.detect_faces

    def counted(image: np.ndarray, *args: int) -> list[np.ndarray]:
        searched.append(image.shape)
        return search(image, *args)

    monkeypatch.setattr(facemesh, "detect_faces", counted)
    studio = app_module.Studio(tmp_path, DEFAULT_LIMITS, identities)
    try:
        for path, status, message in (
                (portrait, 403, "astronaut.png: the face is a protected identity (Astronaut) and may not be animated"),
                (wall, 422, "no face found in wall.png")):
            searched.clear()
            with pytest.raises(HTTPException) as refused:
                app_module._check_media(studio, {"portrait": [str(path)]})
            assert (refused.value.status_code, refused.value.detail) == (status, message)
            assert len(searched) == 1
    finally:
        studio.store.close()


def test_the_api_docs_work_offline(server):
    """/docs and /redoc loaded Swagger UI and ReDoc from a CDN: blank pages without a network. Their scripts,
    styles and icons are now the app's own, served without a token like the pages."""
    import re

    for page in ("/docs", "/redoc"):
        answer = httpx.get(f"{server.url}{page}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        assert not re.search(r"(?i)https?:|//[a-z]", answer.text), page  # no other host, with or without scheme
        assets = re.findall(r'(?:src|href)="([^"]+)"', answer.text)
        assert any(asset.endswith(".js") for asset in assets), assets
        for asset in assets:
            served = httpx.get(f"{server.url}{asset}")
            assert served.status_code == 200 and served.content, asset
    assert httpx.get(f"{server.url}/docs/oauth2-redirect").status_code == 200


def test_the_api_docs_ask_no_other_host(server):
    """ReDoc's script shows its maker's logo from cdn.redoc.ly, and Swagger UI's validator badge sends the API's
    address to validator.swagger.io: the pages allow only the app's own images, and the badge is off."""
    for page in ("/docs", "/redoc"):
        assert httpx.get(f"{server.url}{page}").headers["content-security-policy"] == "img-src 'self' data:", page
    assert '"validatorUrl": null' in httpx.get(f"{server.url}/docs").text
    assert "content-security-policy" not in httpx.get(f"{server.url}/").headers


def test_the_web_app_is_served(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="consent"', 'id="kind"', 'id="jobs"', "AI-generated"):
        assert element in page.text
    assert (server.folder / "studio.sqlite").exists()


def test_templates_and_the_ray_path(tmp_path, portrait):
    """Both built-in templates, and an animation rendered in chunks on a local Ray cluster (serve --ray)."""
    server = Server(tmp_path, "--ray", "local:2").start()
    try:
        headers = server.user("heidi")
        assert httpx.get(f"{server.url}/healthz").json()["renderer"] == "ray, animations in 2 chunks"
        listed = httpx.get(f"{server.url}/api/templates", headers=headers).json()["templates"]
        assert [t["id"] for t in listed] == ["nod", "hello"]
        job_id = _submit(server, headers, portraits=(portrait,), template="hello").json()["id"]
        assert _wait(server, headers, job_id)["status"] == "done"
        video = tmp_path / "hello.mp4"
        video.write_bytes(httpx.get(f"{server.url}/api/jobs/{job_id}/result", headers=headers, timeout=30).content)
        report = verify(video)
        assert report["ai_generated"] and report["watermark"]["found"]
        with av.open(str(video)) as container:  # the template's sound comes along
            assert container.streams.audio
    finally:
        server.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "99999"], "argument --port: expected a port number from 1 to 65535, not '99999'"),
    (["--ray", "local:abc"], "argument --ray: expected local, local:CPUS or a cluster's address, not 'local:abc'"),
    (["--ray", ""], "argument --ray: expected local, local:CPUS or a cluster's address, not ''"),
    (["--max-upload-mb", "0"], "argument --max-upload-mb: expected a number above 0, not '0'"),
    (["--max-megapixels", "60"], "argument --max-megapixels: at most 50, the engine's own limit, not '60'"),
])
def test_bad_server_options(args, message, capsys):
    from vivify.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_portrait_limit_above_the_engines_is_refused_at_start(tmp_path):
    from vivify.studio.app import create_app
    from vivify.studio.limits import Limits

    with pytest.raises(ValueError, match=r"limits\.megapixels is 60, over the engine's 50"):
        create_app(tmp_path, Limits(megapixels=60))


def test_a_data_folder_that_is_a_file(tmp_path, capsys):
    from vivify.cli import main

    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert main(["users", "add", "bob", "--data-dir", str(taken)]) == 2
    assert capsys.readouterr().err == f"vivify: error: {taken}: not a folder (the studio keeps its data in one)\n"
    assert taken.read_text() == "mine"


def test_a_database_that_cannot_be_read_is_named_in_one_line(tmp_path, capsys):
    """A truncated or foreign file where the studio keeps its users or its protected faces gave a traceback."""
    from vivify.cli import main

    (tmp_path / "studio.sqlite").write_bytes(b"not a database " * 100)
    (tmp_path / "protected.sqlite").write_bytes(b"not a database " * 100)
    for args, name in ((["users", "add", "carol"], "studio.sqlite"), (["protect", "list"], "protected.sqlite")):
        assert main([*args, "--data-dir", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (f"vivify: error: {tmp_path / name}: cannot use this database (file is not "
                                           "a database)\n")


@pytest.mark.parametrize("name", [" alice", "alice ", "   "])
def test_a_user_name_with_spaces_around_it_is_refused(tmp_path, capsys, name):
    """" alice" beside "alice" would read as the same user in the consent and audit records."""
    from vivify.cli import main

    assert main(["users", "add", name, "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"vivify: error: invalid user name {name!r}: use 1-100 printable characters, "
                                       "no spaces around them\n")


def test_the_chunks_of_a_job_are_written_in_the_data_folder(tmp_path, monkeypatch):
    """Every node of a Ray cluster shares the data folder, not the server's /tmp: chunk folders made there did
    not exist on the other nodes."""
    import vivify.distributed
    from vivify.distributed import local_runner
    from vivify.studio.store import Job
    from vivify.studio.worker import Cluster, run_job

    called: dict = {}
    monkeypatch.setattr(vivify.distributed, "animate_chunked", lambda *args, **options: called.update(options))
    job = Job(id="j1", user_id=1, kind="animate", status="running", progress=0.0, eta_seconds=None, stage=None,
              stage_progress=None, error=None,
              params={}, inputs={"portrait": ["p.png"], "driving": ["d.mp4"]}, consent={}, result=None, attempts=1,
              created="", started=None, finished=None)
    output = tmp_path / "results" / "j1.mp4"
    run_job(job, output, progress=None, marks=None, cluster=Cluster(run=local_runner, chunks=2))
    assert called["scratch"] == output.parent


def test_a_users_token_is_renewed_or_revoked_and_the_users_are_listed(tmp_path, capsys):
    """`users add` was the only command: a lost or leaked token could be neither replaced nor stopped."""
    from vivify.cli import main
    from vivify.studio.store import Store

    def vivify(*args: str) -> str:
        assert main(["users", *args, "--data-dir", str(tmp_path)]) == 0
        return capsys.readouterr().out

    first = vivify("add", "olga").splitlines()[-1]
    vivify("add", "petr")
    second = vivify("token", "olga").splitlines()[-1]
    store = Store(tmp_path)
    try:
        assert store.user_for_token(first) is None and store.user_for_token(second).name == "olga"
        assert vivify("revoke", "petr") == "user petr: token revoked\n"
        assert [line.split("\t")[0::2] for line in vivify("list").splitlines()] == [["olga"], ["petr", "revoked"]]
        assert store.user_for_token(second).name == "olga"
    finally:
        store.close()
    assert main(["users", "revoke", "nobody", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "vivify: error: no user 'nobody'\n"


def test_a_ray_cluster_that_does_not_answer_is_named_at_once(tmp_path):
    """`serve --ray 127.0.0.1:1` waited on Ray's retries for minutes, printing Ray's own warnings."""
    from vivify.errors import VivifyError
    from vivify.studio.server import cluster

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(VivifyError) as error:
        cluster(f"127.0.0.1:{port}")
    assert str(error.value) == f"--ray 127.0.0.1:{port}: no Ray cluster answers there (Connection refused)"
    assert time.monotonic() - started < 10


def test_a_job_that_keeps_stopping_the_server_fails_instead_of_looping(tmp_path):
    from vivify.studio.store import MAX_ATTEMPTS, Store

    store = Store(tmp_path)
    try:
        user = store.user_for_token(store.add_user("frank"))
        job = store.create_job(user, "animate", {}, {}, {"confirmed": True})
        for stop in range(1, MAX_ATTEMPTS + 1):
            assert store.claim().id == job.id  # the server runs it ... and is killed
            assert store.requeue_running() == (1 if stop < MAX_ATTEMPTS else 0)
        failed = store.job(job.id)
        assert failed.status == "failed" and f"stopped while running this job {MAX_ATTEMPTS} times" in failed.error
        assert store.claim() is None
    finally:
        store.close()


def test_jobs_submitted_at_the_same_moment_keep_to_the_limit(tmp_path):
    """The limit is counted as the job is queued, in one transaction with it: requests checked at the same
    moment (in threads of one server, or by two stores on one file) cannot all slip under it."""
    from concurrent.futures import ThreadPoolExecutor

    from vivify.studio.store import Store, TooManyJobs

    stores = [Store(tmp_path), Store(tmp_path)]
    try:
        user = stores[0].user_for_token(stores[0].add_user("gina"))

        def submit(index: int) -> int | None:
            try:
                stores[index % 2].create_job(user, "animate", {}, {}, {"confirmed": True}, max_waiting=5)
            except TooManyJobs as refused:
                return refused.waiting
            return None

        with ThreadPoolExecutor(10) as pool:
            refusals = list(pool.map(submit, range(10)))
        assert refusals.count(None) == 5 and sorted(r for r in refusals if r is not None) == [5] * 5
        assert stores[1].waiting(user) == 5
    finally:
        for store in stores:
            store.close()


def test_a_jobs_estimate_counts_the_frames_pace_from_the_end_of_the_reference_pass(tmp_path, monkeypatch):
    """A grid first passes over the whole driving video to pick its references (`--reference best`), then
    renders. The job says which stage it is in and how far along that is; its own share stays at 0 through the
    pass. The estimate of the time left is the frames' own pace: from the job's start it counted the pass as
    rendering time, and a job halfway through its frames was told it had as long again as it had run."""
    import types

    from vivify.studio import worker as worker_module
    from vivify.studio.store import Store

    clock = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr(worker_module, "time", types.SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(worker_module, "_PROGRESS_EVERY", 0.0)  # every report written
    store = Store(tmp_path)
    seen = []
    try:
        user = store.user_for_token(store.add_user("hana"))
        job = store.create_job(user, "sing", {}, {}, {"confirmed": True})

        def look() -> None:
            public = store.job(job.id).public()
            seen.append(tuple(public[key] for key in ("stage", "stage_progress", "progress", "eta_seconds")))

        def render(job, output, progress, marks, cluster=None):
            look()  # claimed, nothing reported yet
            for done in range(1, 101):  # the pass: 10 s for 100 frames
                clock.now += 0.1
                progress(done, 100, stage=PICKING)
                if done == 44:
                    look()
            for done in range(1, 101):  # the frames: 0.2 s apiece
                clock.now += 0.2
                progress(done, 100)
                if done in (10, 50):
                    look()
            output.write_bytes(b"video")

        monkeypatch.setattr(worker_module, "run_job", render)
        (tmp_path / "results").mkdir()
        worker_module.Worker(store, tmp_path / "results").run(store.claim())
        look()
    finally:
        store.close()
    assert seen == [(None, None, 0.0, None), (PICKING, 0.44, 0.0, None), (RENDERING, 0.1, 0.1, pytest.approx(18.0)),
                    (RENDERING, 0.5, 0.5, pytest.approx(10.0)), (None, None, 1.0, 0.0)]


def test_a_database_made_before_the_stages_gains_them(tmp_path):
    """A studio database made by a version without the jobs' stage columns is upgraded as it is opened: its jobs
    are kept, and report their stage from then on."""
    import sqlite3

    from vivify.studio.store import Store

    with contextlib.closing(sqlite3.connect(tmp_path / "studio.sqlite")) as db, db:
        db.executescript("""
            CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
                                token_sha256 TEXT NOT NULL UNIQUE, created TEXT NOT NULL);
            CREATE TABLE jobs (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), kind TEXT NOT NULL,
                               status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0, eta_seconds REAL, error TEXT,
                               params TEXT NOT NULL, inputs TEXT NOT NULL, consent TEXT NOT NULL, result TEXT,
                               attempts INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, started TEXT,
                               finished TEXT);
            INSERT INTO users (name, token_sha256, created) VALUES ('hana', 'x', '2026-11-01T00:00:00.000+00:00');
            INSERT INTO jobs (id, user_id, kind, status, params, inputs, consent, created)
                VALUES ('old', 1, 'sing', 'queued', '{}', '{}', '{}', '2026-11-01T00:00:00.000+00:00');
        """)
    store = Store(tmp_path)
    try:
        job = store.claim()
        assert (job.id, job.stage, job.stage_progress) == ("old", None, None)
        assert store.progress(job.id, 0.0, None, PICKING, 0.25)
        assert (store.job("old").stage, store.job("old").stage_progress) == (PICKING, 0.25)
    finally:
        store.close()
    Store(tmp_path).close()  # and opened again, with the columns there


def test_a_job_put_back_by_a_stopping_server_keeps_its_attempts(tmp_path, monkeypatch):
    """A server stopped on purpose (SIGTERM, Ctrl-C) puts its running job back in the queue at once, and that
    run does not count among the attempts that fail a job which keeps stopping the server: restarts alone
    never fail a job."""
    from vivify.studio import worker as worker_module
    from vivify.studio.store import MAX_ATTEMPTS, Store

    store = Store(tmp_path)
    try:
        user = store.user_for_token(store.add_user("hana"))
        job = store.create_job(user, "animate", {}, {}, {"confirmed": True})
        worker = worker_module.Worker(store, tmp_path / "results")
        worker._stop.set()  # the server is stopping while the job renders

        def render(job, output, progress, marks, cluster=None):
            progress(1, 10)
            raise AssertionError("the render goes on while the server stops")

        monkeypatch.setattr(worker_module, "run_job", render)
        for _ in range(MAX_ATTEMPTS + 1):
            worker.run(store.claim())
            assert store.requeue_running() == 0  # nothing left running for the next start
        again = store.job(job.id)
        assert (again.status, again.attempts, again.progress, again.eta_seconds) == ("queued", 0, 0.0, None)
    finally:
        store.close()


def test_a_server_stopped_by_sigterm_shuts_down_and_puts_its_job_back(tmp_path):
    """`kill`, systemd and docker stop a server with SIGTERM. uvicorn stops gracefully and then raises the signal
    again: the process died of it before its worker put the running job back, so every stop used one of the
    job's attempts. It now ends as after Ctrl-C: the worker stopped, the job put back (see the test above)."""
    server = Server(tmp_path).start()
    server.process.terminate()
    assert server.process.wait(30) == 0, (tmp_path / "server.log").read_text()


def test_a_dub_of_a_video_that_shows_a_protected_face_for_a_moment_fails_before_rendering(tmp_path, monkeypatch):
    """The gate at upload looks at 8 frames spread over the video: a protected face shown for half a second
    between two of them came through, and the dub animated it. Before a dub renders, a frame every second is
    checked too."""
    from conftest import encode_clip

    from vivify.studio import worker as worker_module
    from vivify.studio.identities import ProtectedIdentities
    from vivify.studio.store import Store

    identities = ProtectedIdentities(tmp_path / "protected.sqlite")
    identities.add("Astronaut", face_crop(256))
    grey = np.full((256, 256, 3), 120, np.uint8)
    # 100 frames at 25 frames/s; the upload gate looks at frames 0, 14, 28, 42, 57, 71, 85 and 99.
    video = encode_clip(tmp_path / "moment.mp4", [face_crop(256) if 44 <= i <= 56 else grey for i in range(100)],
                        fps=25)
    rendered = []
    monkeypatch.setattr(worker_module, "run_job", lambda *args, **kwargs: rendered.append(args))
    store = Store(tmp_path / "studio")
    try:
        user = store.user_for_token(store.add_user("hana"))
        job = store.create_job(user, "dub", {"text": "Hello"}, {"driving": [str(video)]}, {"confirmed": True})
        worker_module.Worker(store, tmp_path / "results", identities=identities).run(store.claim())
        failed = store.job(job.id)
    finally:
        store.close()
    assert rendered == [] and failed.status == "failed"
    assert failed.error == "moment.mp4: the face at 2.0 s is a protected identity (Astronaut) and may not be animated"


def test_a_template_asked_for_by_several_requests_at_once_is_made_once(tmp_path, monkeypatch):
    """Each request made its own copy of a missing template (10 s of both cores apiece); now one makes it and
    the others wait for it."""
    import threading

    import vivify.demo
    from vivify.studio import app as app_module
    from vivify.studio.limits import DEFAULT_LIMITS

    studio = app_module.Studio(tmp_path, DEFAULT_LIMITS, None)
    made: list[Path] = []
    all_in = threading.Event()

    def make(path: Path, marks) -> Path:
        made.append(path)
        if len(made) == 3:
            all_in.set()
        all_in.wait(2)  # the other requests, were they let in, would start their own copies meanwhile
        path.write_bytes(b"the template")
        return path

    monkeypatch.setattr(vivify.demo, "write_performed_clip", make)
    answers: list[Path] = []
    requests = [threading.Thread(target=lambda: answers.append(app_module.template_path(studio, "nod")))
                for _ in range(3)]
    try:
        for request in requests:
            request.start()
        for request in requests:
            request.join()
    finally:
        studio.store.close()
    assert len(made) == 1 and answers == [tmp_path / "templates" / "nod.mp4"] * 3


def test_one_server_per_data_folder_and_no_stray_uploads(tmp_path):
    """A second server on a folder in use refuses to start (it would take the first one's running jobs for
    interrupted ones); uploads that a stopped server left without a job are removed when one starts."""
    stray = tmp_path / "uploads" / "0123abcd" / "portrait0"
    stray.mkdir(parents=True)
    (stray / "half.png").write_bytes(b"\x89PNG half an upload")
    server = Server(tmp_path).start()
    try:
        assert not (tmp_path / "uploads" / "0123abcd").exists()
        second = subprocess.run([sys.executable, "-m", "vivify.cli", "serve", "--port", str(_free_port()),
                                 "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"vivify: error: {tmp_path}: in use by another vivify serve (stop it, or give another --data-dir)")
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


def test_a_protected_face_is_refused_upside_down_and_later_in_a_video(tmp_path, portrait):
    """The gate looks at an image turned over too (dlib and MediaPipe take an upside-down face for an upright
    one, and the animated result can be turned back), and at frames across a video, not only its first (a dub
    animates the video's own face, which may come into view later)."""
    registered = tmp_path / "registered.png"
    Image.fromarray(face_crop(512)).save(registered)
    _vivify("protect", "add", "Astronaut", str(registered), "--data-dir", str(tmp_path))
    upside_down = tmp_path / "upside_down.png"
    Image.fromarray(np.ascontiguousarray(face_crop(256)[::-1, ::-1])).save(upside_down)
    late = tmp_path / "late.mp4"
    with av.open(str(late), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        for index in range(50):  # an empty room for a second, then she walks in
            picture = face_crop(256) if index >= 25 else np.full((256, 256, 3), 128, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    server = Server(tmp_path).start()
    try:
        headers = server.user("ida")
        answer = _submit(server, headers, portraits=(upside_down,), template="nod")
        assert answer.status_code == 403 and "protected identity (Astronaut)" in answer.json()["detail"]
        answer = httpx.post(f"{server.url}/api/jobs", headers=headers, timeout=120,
                            data={"kind": "dub", "consent": "true", "text": "Hello."},
                            files=[("driving", ("late.mp4", late.read_bytes(), "video/mp4"))])
        assert answer.status_code == 403
        assert answer.json()["detail"] == ("late.mp4: the face is a protected identity (Astronaut) and may not be "
                                           "animated")
    finally:
        server.stop()
