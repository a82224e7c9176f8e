"""`modelplane-storage` as the init container runs it: a process, an exit code, one line."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtimekit import REPO


def run_storage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "runtime"), os.environ.get("PYTHONPATH", "")]),
        "MODELPLANE_STORAGE_SHA256": "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "modelplane_runtime.storage", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_tarball(model_dir: Path, path: Path, top: str = "tiny") -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for file in sorted(model_dir.iterdir()):
            bundle.add(file, arcname=f"{top}/{file.name}")
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    token = ""

    def do_GET(self) -> None:
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_error(403, "forbidden")
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_error(403, "forbidden")
            return
        super().do_HEAD()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder; yields its base URL and the folder."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: object, **kwargs: object) -> _Handler:
        return _Handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        _Handler.token = ""


def test_file_uri_folder_is_copied(tiny_model_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = run_storage(f"file://{tiny_model_dir}", str(dest))
    assert result.returncode == 0, result.stderr
    for name in ("model.pt2", "metadata.json"):
        assert (dest / name).read_bytes() == (tiny_model_dir / name).read_bytes()


def test_pvc_uri_maps_into_the_claim_mount(tiny_model_dir: Path, tmp_path: Path) -> None:
    claim_root = tmp_path / "pvc"
    (claim_root / "models").mkdir(parents=True)
    make_tarball(tiny_model_dir, claim_root / "models" / "tiny.tar.gz")
    dest = tmp_path / "models"
    result = run_storage(
        "pvc://my-claim/models/tiny.tar.gz", str(dest), MODELPLANE_PVC_ROOT=str(claim_root)
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "tiny" / "metadata.json").is_file()


def test_http_tarball_is_unpacked_after_its_sha256_matches(
    tiny_model_dir: Path, tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    url, root = http_root
    tarball = make_tarball(tiny_model_dir, root / "tiny.tgz")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    dest = tmp_path / "models"
    result = run_storage(f"{url}/tiny.tgz", str(dest), MODELPLANE_STORAGE_SHA256=digest)
    assert result.returncode == 0, result.stderr
    unpacked = dest / "tiny" / "model.pt2"
    assert unpacked.read_bytes() == (tiny_model_dir / "model.pt2").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["tiny"], "no download left behind"


def test_bad_checksum_fails_with_one_line_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    url, root = http_root
    make_tarball(tiny_model_dir, root / "tiny.tgz")
    dest = tmp_path / "models"
    termination_log = tmp_path / "termination-log"
    result = run_storage(
        f"{url}/tiny.tgz",
        str(dest),
        MODELPLANE_STORAGE_SHA256="ab" * 32,
        MODELPLANE_TERMINATION_LOG=str(termination_log),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256 mismatch" in lines[0]
    assert "sha256 mismatch" in termination_log.read_text()
    assert list(dest.iterdir()) == []


def test_http_not_found_and_bearer_token(
    tiny_model_dir: Path, tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    url, root = http_root
    make_tarball(tiny_model_dir, root / "tiny.tar.gz")
    missing = run_storage(f"{url}/missing.tar.gz?X-Signature=topsecret", str(tmp_path / "a"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"modelplane-storage: not found (HTTP 404): {url}/missing.tar.gz?<redacted>"
    ]
    _Handler.token = "tok123"
    denied = run_storage(f"{url}/tiny.tar.gz", str(tmp_path / "b"))
    assert denied.returncode == 1
    assert "access denied (HTTP 403)" in denied.stderr, denied.stderr
    assert "MODELPLANE_STORAGE_BEARER_TOKEN" in denied.stderr
    unreachable = run_storage("http://127.0.0.1:9/m.tar.gz", str(tmp_path / "d"))
    assert "not found or unreachable" in unreachable.stderr
    allowed = run_storage(
        f"{url}/tiny.tar.gz", str(tmp_path / "c"), MODELPLANE_STORAGE_BEARER_TOKEN="tok123"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "c" / "tiny" / "metadata.json").is_file()
    assert "tok123" not in allowed.stdout + allowed.stderr


def test_tarball_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as bundle:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"bad"))
    dest = tmp_path / "models"
    result = run_storage(f"file://{evil}", str(dest))
    assert result.returncode == 1
    assert "unsafe tarball member" in result.stderr
    assert not (tmp_path / "outside.txt").exists()


def _evil_tarballs(root: Path) -> dict[str, Path]:
    """One tarball per kind of member the initializer must refuse."""
    kinds: dict[str, tarfile.TarInfo] = {}
    kinds["dotdot"] = tarfile.TarInfo("../outside.txt")
    kinds["absolute"] = tarfile.TarInfo("/tmp/abs-outside.txt")
    link = tarfile.TarInfo("tiny/escape")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    kinds["symlink"] = link
    device = tarfile.TarInfo("tiny/null")
    device.type = tarfile.CHRTYPE
    kinds["device"] = device
    paths = {}
    for kind, info in kinds.items():
        paths[kind] = root / f"{kind}.tar"
        with tarfile.open(paths[kind], "w") as bundle:
            info.size = 3 if info.isfile() else 0
            bundle.addfile(info, io.BytesIO(b"bad") if info.isfile() else None)
    return paths


@pytest.mark.parametrize("python", ["current", "3.11.2"])
def test_tarballs_unpack_and_unsafe_members_are_refused_on_pythons_before_3_11_4(
    python: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian bookworm's python3 (the images' base) is 3.11.2: no tarfile filters there."""
    from modelplane_runtime import storage

    if python == "3.11.2":
        monkeypatch.delattr(tarfile, "data_filter")
        monkeypatch.delattr(tarfile, "FilterError")
    tarball = make_tarball(tiny_model_dir, tmp_path / "tiny.tar.gz")
    storage.fetch(f"file://{tarball}", tmp_path / "good")
    assert (tmp_path / "good" / "tiny" / "model.pt2").is_file()
    for kind, evil in _evil_tarballs(tmp_path).items():
        with pytest.raises(storage.StorageError, match="unsafe tarball member"):
            storage.fetch(f"file://{evil}", tmp_path / f"dest-{kind}")
    assert not (tmp_path / "outside.txt").exists()
    assert not Path("/tmp/abs-outside.txt").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/model", "unsupported scheme 'ftp'"),
        ("no-scheme", "not a URI"),
        ("file:///definitely/not/here.tar", "not found: file:///definitely/not/here.tar"),
    ],
)
def test_bad_uris_exit_non_zero_with_a_reason(uri: str, message: str, tmp_path: Path) -> None:
    result = run_storage(uri, str(tmp_path / "models"))
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_uri_and_sha_from_the_environment(tiny_model_dir: Path, tmp_path: Path) -> None:
    tarball = make_tarball(tiny_model_dir, tmp_path / "tiny.tar.gz")
    dest = tmp_path / "models"
    result = run_storage(
        MODELPLANE_STORAGE_URI=f"file://{tarball}",
        MODELPLANE_MODEL_DIR=str(dest),
        MODELPLANE_STORAGE_SHA256=hashlib.sha256(tarball.read_bytes()).hexdigest(),
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "tiny" / "model.pt2").is_file()


def test_s3_prefix_and_tarball_through_a_local_moto_server(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("s3fs", reason="the s3 extra (modelplane[s3]) is not installed")
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import boto3

    from runtimekit import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="models")
        for file in tiny_model_dir.iterdir():
            s3.upload_file(str(file), "models", f"tiny/1/{file.name}")
        tarball = make_tarball(tiny_model_dir, tmp_path / "tiny.tar.gz")
        s3.upload_file(str(tarball), "models", "bundles/tiny.tar.gz")

        prefix = run_storage("s3://models/tiny/1", str(tmp_path / "a"), **env)
        assert prefix.returncode == 0, prefix.stderr
        assert (tmp_path / "a" / "model.pt2").read_bytes() == (
            tiny_model_dir / "model.pt2"
        ).read_bytes()

        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        bundle = run_storage(
            "s3://models/bundles/tiny.tar.gz",
            str(tmp_path / "b"),
            MODELPLANE_STORAGE_SHA256=digest,
            **env,
        )
        assert bundle.returncode == 0, bundle.stderr
        assert (tmp_path / "b" / "tiny" / "metadata.json").is_file()

        missing = run_storage("s3://models/nothing/here.tar.gz", str(tmp_path / "c"), **env)
        assert missing.returncode == 1 and "not found" in missing.stderr
    finally:
        server.stop()


class _ExpiredHandler(http.server.BaseHTTPRequestHandler):
    """HEAD succeeds, GET is refused: a presigned URL that expires mid-download."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_library_error_never_echoes_credentials_or_a_signature(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ExpiredHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        query = "X-Amz-Credential=AKIAXX%2F2023%2Fus&X-Amz-Signature=deadbeef"
        uri = f"http://user:s3cr3t@127.0.0.1:{port}/model.tgz?{query}"
        log = tmp_path / "termination-log"
        result = run_storage(uri, str(tmp_path / "m"), MODELPLANE_TERMINATION_LOG=str(log))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    for text in (result.stderr, log.read_text()):
        assert len(text.strip().splitlines()) == 1
        for secret in ("s3cr3t", "deadbeef", "AKIAXX"):
            assert secret not in text, text


@pytest.mark.parametrize(
    "uri", ["http://u:p@127.0.0.1:99999/m.tgz?sig=S", "http://u:p@[::1/m.tgz?sig=S"]
)
def test_an_unparseable_uri_is_a_one_line_reason(uri: str, tmp_path: Path) -> None:
    result = run_storage(uri, str(tmp_path / "m"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "sig=S" not in result.stderr and ":p@" not in result.stderr


def test_the_content_digest_is_reported_and_follows_the_bytes_not_the_uri(
    tiny_model_dir: Path, tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    """A tarball over http and the same folder over file:// report one content digest;
    a changed object behind the same URI reports another."""
    url, root = http_root
    source = tmp_path / "src"
    shutil.copytree(tiny_model_dir, source / "tiny")
    make_tarball(source / "tiny", root / "tiny.tgz")
    reported = []
    for n, uri in enumerate((f"{url}/tiny.tgz", f"file://{source}")):
        log = tmp_path / f"termination-{n}"
        result = run_storage(
            uri, str(tmp_path / f"models-{n}"), MODELPLANE_TERMINATION_LOG=str(log)
        )
        assert result.returncode == 0, result.stderr
        reported.append(log.read_text().strip())
    assert reported[0].startswith("content sha256:")
    assert len(reported[0]) == len("content sha256:") + 64
    assert reported[0] == reported[1]
    (source / "tiny" / "metadata.json").write_text('{"changed": true}')
    make_tarball(source / "tiny", root / "tiny.tgz")
    log = tmp_path / "termination-again"
    again = run_storage(
        f"{url}/tiny.tgz", str(tmp_path / "again"), MODELPLANE_TERMINATION_LOG=str(log)
    )
    assert again.returncode == 0
    assert log.read_text().strip() != reported[0]
