"""A local stand-in for the Hugging Face Hub, for tests that push through the real ``huggingface_hub`` client.

It serves the routes that ``huggingface_hub`` 2.x calls to create a repo, create a branch, validate README metadata,
decide the upload mode of each file (``preupload``), upload large files by the LFS batch API with the ``basic``
transfer (one PUT per object, then ``verify``), commit (NDJSON), set a Space variable, and read files back
(``HEAD``/``GET .../resolve/...`` and the repo-info route), as the client source spells them (``hf_api.py``,
``_commit_api.py``, ``lfs.py``, ``file_download.py``). Clients must set ``HF_HUB_DISABLE_XET=1``: the Xet protocol
that ``hf_xet`` would otherwise use cannot be served locally.

Everything that arrives is recorded: each request (method, path, headers, body size), the LFS objects by sha256, and
each commit with the bytes of every file it wrote (LFS pointers resolved to their content). The server can be told to
fail: answer one route (or all) with a status code, or drop the connection without answering.

>>> hub = FakeHub().start()  # doctest: +SKIP
>>> HfApi(endpoint=hub.url, token="hf_test").create_repo("user/model")  # doctest: +SKIP
>>> hub.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

# The patterns a new Hub repository's .gitattributes stores in LFS (abridged), and the Hub's size threshold.
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".pkl", ".npy", ".npz", ".model",
    ".zip", ".gz", ".tar", ".parquet", ".arrow",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in LFS_SUFFIXES)
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

RESOLVE = r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
ROUTES: list[tuple[str, str, re.Pattern]] = [
    (name, method, re.compile(pattern))
    for name, method, pattern in [
        ("create_repo", "POST", r"^/api/repos/create$"),
        ("agent_harnesses", "GET", r"^/api/agent-harnesses$"),  # a public registry the client reads once a day
        ("validate_yaml", "POST", r"^/api/validate-yaml$"),
        ("preupload", "POST", r"^/api/(?P<t>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$"),
        ("commit", "POST", r"^/api/(?P<t>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$"),
        ("create_branch", "POST", r"^/api/(?P<t>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>[^/]+)$"),
        ("space_variable", "POST", r"^/api/spaces/(?P<repo>[^/]+/[^/]+)/variables$"),
        ("repo_info", "GET",
         r"^/api/(?P<t>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$"),
        ("lfs_batch", "POST", r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$"),
        ("lfs_upload", "PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$"),
        ("lfs_verify", "POST", r"^/lfs-verify$"),
        ("resolve", "HEAD", RESOLVE),
        ("resolve", "GET", RESOLVE),
    ]
]


@dataclass
class RecordedRequest:
    """One request as it arrived: ``route`` is the name of the matched route (``None`` for an unknown one);
    ``headers`` has lower-case names."""

    method: str
    path: str
    route: str | None
    headers: dict[str, str]
    body: bytes


@dataclass
class Commit:
    """One commit: ``files`` maps each path it added to the bytes that arrived (LFS content resolved)."""

    oid: str
    repo_type: str
    repo_id: str
    revision: str
    summary: str
    description: str
    files: dict[str, bytes]
    deleted: list[str]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool | None
    sdk: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    branches: dict[str, dict[str, bytes]] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit oid -> files

    def tree(self, revision: str) -> dict[str, bytes] | None:
        """The files at a branch head or at a commit oid."""
        return self.branches.get(revision, self.snapshots.get(revision))

    def head(self, revision: str) -> str:
        return self.heads.get(revision, revision)


@dataclass
class Failure:
    status: int | None  # None: drop the connection
    route: str | None  # None: every route
    remaining: int | None  # None: until cleared
    message: str


class FakeHub:
    """A threaded HTTP server on 127.0.0.1 (a free port) that plays the Hub for ``huggingface_hub``.

    Args:
        token (`str`, *optional*): when set, every request must carry ``Authorization: Bearer <token>``; others get
            401 as the Hub answers an invalid token.
        namespace (`str`, *optional*, defaults to `"user"`): the account a repo id without namespace goes to.
    """

    def __init__(self, token: str | None = None, namespace: str = "user") -> None:
        self.token = token
        self.namespace = namespace
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.commits: list[Commit] = []
        self.yaml_validations: list[dict[str, Any]] = []
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub.start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, status: int | None = 503, route: str | None = None, times: int | None = None,
             message: str = "Injected failure") -> None:
        """Answer ``route`` (a route name such as ``"commit"``; ``None``: all) with ``status``, or drop the
        connection when ``status`` is ``None``; ``times`` failures, or until :meth:`clear_failures`."""
        with self._lock:
            self.failures.append(Failure(status, route, times, message))

    def clear_failures(self) -> None:
        with self._lock:
            self.failures.clear()

    # ------------------------------------------------------------------ inspection

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at the head of ``revision``, as committed."""
        return dict(self.repos[(repo_type, repo_id)].branches[revision])

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def routes_called(self) -> list[str | None]:
        return [r.route for r in self.requests]

    # ------------------------------------------------------------------ internals used by the handler

    def _take_failure(self, route: str | None) -> Failure | None:
        with self._lock:
            for failure in self.failures:
                if failure.route is None or failure.route == route:
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self.failures.remove(failure)
                    return failure
        return None

    def _new_commit_oid(self, *parts: bytes) -> str:
        digest = hashlib.sha1()
        for part in parts:
            digest.update(part)
        digest.update(str(len(self.commits)).encode())
        return digest.hexdigest()


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None


def validate_model_index(metadata: dict) -> list[str]:
    """Errors in a ``model-index`` block, checked as the Hub checks it (the fields ``EvalResult`` requires)."""
    errors = []
    model_index = metadata.get("model-index")
    if model_index is None:
        return errors
    if not isinstance(model_index, list):
        return ['"model-index" must be an array']
    for i, entry in enumerate(model_index):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'"model-index[{i}].name" must be a string')
            continue
        for j, result in enumerate(entry.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance(result.get("task", {}).get("type"), str):
                errors.append(f'"{where}.task.type" must be a string')
            dataset = result.get("dataset", {})
            if not (isinstance(dataset.get("name"), str) and isinstance(dataset.get("type"), str)):
                errors.append(f'"{where}.dataset" needs string "name" and "type"')
            for k, metric in enumerate(result.get("metrics") or []):
                if not isinstance(metric.get("type"), str) or not isinstance(metric.get("value"), (int, float, str)):
                    errors.append(f'"{where}.metrics[{k}]" needs a string "type" and a "value"')
    return errors


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None,
              content_type: str = "application/json", body: bytes | None = None) -> None:
        data = body if body is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers=headers)

    def _dispatch(self) -> None:
        hub = self.hub
        body = self._read_body()
        path = urlsplit(self.path).path
        route, match = None, None
        for name, method, pattern in ROUTES:
            if method == self.command and (match := pattern.match(path)):
                route = name
                break
        with hub._lock:
            hub.requests.append(RecordedRequest(self.command, self.path, route,
                                                {k.lower(): v for k, v in self.headers.items()}, body))
        failure = hub._take_failure(route)
        if failure is not None:
            if failure.status is None:  # drop the connection without an answer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._error(failure.status, failure.message)
            return
        # The storage URL of an LFS upload is pre-signed (as S3's are) and the registry is public: no token there.
        authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
        if hub.token is not None and route not in ("lfs_upload", "agent_harnesses") and not authorized:
            self._error(401, "Invalid credentials in Authorization header")
            return
        if route is None:
            self._error(404, f"FakeHub does not serve {self.command} {path}")
            return
        groups = {k: unquote(v) if v else v for k, v in match.groupdict().items()}
        getattr(self, f"_route_{route}")(groups, body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch

    def _repo(self, repo_type: str, repo_id: str, revision: str | None = None) -> Repo | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if revision is not None and repo.tree(revision) is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return None
        return repo

    # ------------------------------------------------------------------ routes

    def _route_create_repo(self, groups: dict, body: bytes) -> None:
        payload = _json_or_none(body) or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.hub.namespace}/{payload['name']}"
        url = f"{self.hub.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:
                self._send(409, {"error": "You already created this repo", "url": url},
                           headers={"X-Error-Message": "You already created this repo"})
                return
            if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
                self._error(400, "sdk is required for a Space")
                return
            repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private" or payload.get("private"),
                        sdk=payload.get("sdk"))
            repo.variables = {v["key"]: v["value"] for v in payload.get("variables") or []}
            repo.branches["main"] = {".gitattributes": GITATTRIBUTES}
            repo.heads["main"] = self.hub._new_commit_oid(repo_id.encode())
            repo.snapshots[repo.heads["main"]] = dict(repo.branches["main"])
            self.hub.repos[(repo_type, repo_id)] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _route_agent_harnesses(self, groups: dict, body: bytes) -> None:
        self._send(200, {"standardEnvVars": [], "harnesses": {}})

    def _route_validate_yaml(self, groups: dict, body: bytes) -> None:
        payload = _json_or_none(body) or {}
        content = payload.get("content", "")
        self.hub.yaml_validations.append(payload)
        match = re.match(r"^\s*---\r?\n(.*?)\r?\n---", content, re.DOTALL)
        errors = []
        if match:
            try:
                metadata = yaml.safe_load(match.group(1)) or {}
            except yaml.YAMLError as error:
                metadata, errors = {}, [{"message": f"invalid YAML: {error}"}]
            if not isinstance(metadata, dict):
                errors.append({"message": "metadata must be a mapping"})
            else:
                errors += [{"message": m} for m in validate_model_index(metadata)]
        if errors:
            self._send(400, {"errors": errors, "warnings": []})
        else:
            self._send(200, {"errors": [], "warnings": []})

    def _route_repo_info(self, groups: dict, body: bytes) -> None:
        repo_type = REPO_TYPES[groups["t"]]
        revision = groups.get("rev") or "main"
        repo = self._repo(repo_type, groups["repo"], revision)
        if repo is None:
            return
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "sha": repo.head(revision),
            "private": bool(repo.private),
            "siblings": [{"rfilename": p} for p in sorted(repo.tree(revision))],
        }
        if repo_type == "space":
            info["sdk"] = repo.sdk
        self._send(200, info)

    def _route_create_branch(self, groups: dict, body: bytes) -> None:
        repo = self._repo(REPO_TYPES[groups["t"]], groups["repo"])
        if repo is None:
            return
        start = (_json_or_none(body) or {}).get("startingPoint") or "main"
        with self.hub._lock:
            if groups["rev"] in repo.branches:
                self._error(409, "Reference already exists")
                return
            if start not in repo.branches:
                self._error(404, f"Invalid rev id: {start}", "RevisionNotFound")
                return
            repo.branches[groups["rev"]] = dict(repo.branches[start])
            repo.heads[groups["rev"]] = repo.heads[start]
        self._send(200, {})

    def _route_preupload(self, groups: dict, body: bytes) -> None:
        repo = self._repo(REPO_TYPES[groups["t"]], groups["repo"], groups["rev"])
        if repo is None:
            return
        files = []
        for entry in (_json_or_none(body) or {}).get("files", []):
            sample = base64.b64decode(entry["sample"])
            lfs = entry["path"].endswith(LFS_SUFFIXES) or entry["size"] >= LFS_SIZE_THRESHOLD or b"\x00" in sample
            files.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": None})
        self._send(200, {"files": files, "commitOid": repo.heads[groups["rev"]]})

    def _route_lfs_batch(self, groups: dict, body: bytes) -> None:
        repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(groups.get("prefix") or "", "model")
        if self._repo(repo_type, groups["repo"]) is None:
            return
        payload = _json_or_none(body) or {}
        if "basic" not in payload.get("transfers", ["basic"]):
            self._error(422, "FakeHub only offers the basic transfer")
            return
        objects = []
        for obj in payload.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/lfs-verify", "header": {}},
                }
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _route_lfs_upload(self, groups: dict, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != groups["oid"]:
            self._error(400, "sha256 of the uploaded content does not match the oid")
            return
        with self.hub._lock:
            self.hub.lfs_objects[groups["oid"]] = body
        self._send(200, None)

    def _route_lfs_verify(self, groups: dict, body: bytes) -> None:
        payload = _json_or_none(body) or {}
        stored = self.hub.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            self._error(404, "object not found or wrong size")
            return
        self._send(200, {})

    def _route_commit(self, groups: dict, body: bytes) -> None:
        repo_type, revision = REPO_TYPES[groups["t"]], groups["rev"]
        repo = self._repo(repo_type, groups["repo"], revision)
        if repo is None:
            return
        if "ndjson" not in self.headers.get("Content-Type", ""):
            self._error(400, "commit payload must be application/x-ndjson")
            return
        header, files, deleted = {}, {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                content = self.hub.lfs_objects.get(value["oid"])
                if content is None:
                    self._error(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    return
                files[value["path"]] = content
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                self._error(400, f"unknown commit operation {key!r}")
                return
        if not header.get("summary"):
            self._error(400, "commit summary is required")
            return
        with self.hub._lock:
            tree = repo.branches[revision]
            for path in deleted:
                for existing in [p for p in tree if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del tree[existing]
            tree.update(files)
            oid = self.hub._new_commit_oid(body)
            repo.heads[revision] = oid
            repo.snapshots[oid] = dict(tree)
            self.hub.commits.append(Commit(oid, repo_type, repo.repo_id, revision, header["summary"],
                                           header.get("description", ""), files, deleted))
        url = f"{self.hub.url}/{URL_PREFIXES[repo_type]}{repo.repo_id}/commit/{oid}"
        self._send(200, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    def _route_space_variable(self, groups: dict, body: bytes) -> None:
        repo = self._repo("space", groups["repo"])
        if repo is None:
            return
        payload = _json_or_none(body) or {}
        with self.hub._lock:
            repo.variables[payload["key"]] = payload["value"]
        self._send(200, {k: {"value": v, "description": None} for k, v in repo.variables.items()})

    def _route_resolve(self, groups: dict, body: bytes) -> None:
        repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(groups.get("prefix") or "", "model")
        repo = self._repo(repo_type, groups["repo"], groups["rev"])
        if repo is None:
            return
        content = repo.tree(groups["rev"]).get(groups["path"])
        if content is None:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        headers = {"X-Repo-Commit": repo.head(groups["rev"]), "ETag": f'"{hashlib.sha1(content).hexdigest()}"'}
        if groups["path"].endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(content).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(content))
        self._send(200, headers=headers, content_type="application/octet-stream", body=content)


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (for the 'endpoint down' case)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = ["Commit", "FakeHub", "RecordedRequest", "free_port", "validate_model_index"]
