"""The file store through the native API (``/api/files/``) and seed 002's storage paths, with
Django's test client: size, type (by content), quota, one copy per folder, names, ownership,
signed links, deletion of the bytes (docs/files.md)."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from django.core import signing
from django.core.files.storage import default_storage

from core.errors import ValidationFailed
from files.models import StoredFile
from files.services import SIGNED_URL_SALT, file_store
from tests.api.conftest import assert_error, bearer_client

# the seed 002 views are async: their ORM calls run in another thread, which sees committed rows only
pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def upload(client, name: str, data: bytes, folder: str | None = None):
    body = {"file": _named(name, data)}
    if folder is not None:
        body["folder"] = folder
    return client.post("/api/files/", body, format="multipart")


def _named(name: str, data: bytes) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


def _docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def test_an_upload_is_stored_listed_read_and_deleted_with_its_bytes(alice):
    created = upload(alice, "notes.txt", b"hello files", folder="docs/2026")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "notes.txt" and body["folder"] == "docs/2026"
    assert body["object_name"] == "docs/2026/notes.txt"
    assert body["content_type"] == "text/plain" and body["size"] == 11
    stored = StoredFile.objects.get(pk=body["id"])
    assert default_storage.exists(stored.blob.name)
    assert "notes" not in stored.blob.name  # storage keys carry no user input

    listed = alice.get("/api/files/").json()
    assert [f["id"] for f in listed] == [body["id"]]
    assert alice.get(f"/api/files/{body['id']}/").json()["checksum"] == stored.checksum
    download = alice.get(body["download_url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"hello files"
    assert download["Content-Type"].startswith("text/plain")
    assert download["X-Content-Type-Options"] == "nosniff"

    assert alice.delete(f"/api/files/{body['id']}/").status_code == 204
    assert not StoredFile.objects.filter(pk=body["id"]).exists()
    assert not default_storage.exists(stored.blob.name)
    assert_error(alice.get(f"/api/files/{body['id']}/"), 404, "not_found")


def test_the_type_is_read_from_the_bytes_not_the_name(alice):
    pdf_named_txt = upload(alice, "report.txt", PDF)
    assert pdf_named_txt.status_code == 201 and pdf_named_txt.json()["content_type"] == "application/pdf"
    text_named_png = upload(alice, "photo.png", b"just words")
    assert text_named_png.json()["content_type"] == "text/plain"
    assert upload(alice, "a.png", PNG).json()["content_type"] == "image/png"
    assert upload(alice, "w.docx", _docx()).json()["content_type"].endswith("wordprocessingml.document")
    assert upload(alice, "n.md", b"# Title").json()["content_type"] == "text/markdown"
    refused = assert_error(upload(alice, "cat.png", ELF), 415, "unsupported_media_type")
    assert "cat.png" in refused["detail"]
    assert_error(upload(alice, "empty.txt", b""), 400, "validation_error")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("payload.bin", "x")
    assert_error(upload(alice, "doc.docx", zipped.getvalue()), 415, "unsupported_media_type")
    assert StoredFile.objects.count() == 5


def test_a_file_past_the_size_limit_is_refused(alice, settings):
    settings.NEXUS_FILE_MAX_BYTES = 64
    assert upload(alice, "small.txt", b"x" * 64).status_code == 201
    body = assert_error(upload(alice, "big.txt", b"y" * 65), 413, "file_too_large")
    assert "64" in body["detail"]
    assert StoredFile.objects.count() == 1


def test_the_quota_counts_every_file_of_the_user_and_deleting_frees_it(alice, mallory, settings):
    settings.NEXUS_FILE_QUOTA_BYTES = 100
    first = upload(alice, "a.txt", b"a" * 60).json()
    body = assert_error(upload(alice, "b.txt", b"b" * 50), 403, "quota_exceeded")
    assert "100" in body["detail"] and "60 used" in body["detail"]
    # the same bytes again are the same file: no second copy, no quota
    assert upload(alice, "a-again.txt", b"a" * 60).status_code == 200
    # another user's quota is their own
    assert upload(mallory, "b.txt", b"b" * 50).status_code == 201
    alice.delete(f"/api/files/{first['id']}/")
    assert upload(alice, "b.txt", b"b" * 50).status_code == 201


def test_one_copy_per_folder_and_names_are_unique_in_a_folder(alice):
    first = upload(alice, "plan.txt", b"version one").json()
    again = upload(alice, "other-name.txt", b"version one")
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    elsewhere = upload(alice, "plan.txt", b"version one", folder="archive")
    assert elsewhere.status_code == 201 and elsewhere.json()["object_name"] == "archive/plan.txt"
    clash = upload(alice, "plan.txt", b"version two").json()
    assert clash["name"] == "plan (2).txt"
    assert upload(alice, "plan.txt", b"version three").json()["name"] == "plan (3).txt"


def test_names_and_folders_are_cleaned(alice):
    body = upload(alice, "../../etc/passwd", b"root", folder="/a//b/").json()
    assert body["name"] == "passwd" and body["folder"] == "a/b"
    assert_error(upload(alice, "x.txt", b"y", folder="a/../b"), 400, "validation_error")
    long = "n" * 300 + ".txt"
    assert upload(alice, long, b"long name").json()["name"] == "n" * 196 + ".txt"


def test_a_user_sees_only_their_own_files(alice, mallory, anon):
    mine = upload(alice, "mine.txt", b"private").json()
    assert mallory.get("/api/files/").json() == []
    for path in (f"/api/files/{mine['id']}/", mine["download_url"]):
        assert_error(mallory.get(path), 404, "not_found")
    assert_error(mallory.delete(f"/api/files/{mine['id']}/"), 404, "not_found")
    assert mallory.get("/api/file/storage").json() == {"total": 0, "files": []}
    assert_error(mallory.get("/api/file/storage/mine.txt"), 404, "not_found")
    assert_error(mallory.delete("/api/file/storage/mine.txt"), 404, "not_found")
    assert anon.get("/api/files/").status_code == 401
    assert anon.get("/api/file/storage").status_code == 401
    assert StoredFile.objects.filter(pk=mine["id"]).exists()


def test_signed_links_expire_and_cannot_be_forged(alice, anon):
    mine = upload(alice, "page.html", b"<html><body><script>alert(1)</script></body></html>").json()
    answer = alice.get("/api/file/storage/page.html", {"expires": "120"}).json()
    assert answer["success"] is True
    link = answer["url"]
    assert link.startswith("http://testserver/api/files/signed/")
    fetched = anon.get(link.removeprefix("http://testserver"))
    assert fetched.status_code == 200
    # a user's HTML is never shown from Nexus's origin: downloaded, sandboxed
    assert fetched["Content-Disposition"].startswith("attachment")
    assert "sandbox" in fetched["Content-Security-Policy"]
    token = link.rsplit("/", 1)[1]
    assert_error(anon.get(f"/api/files/signed/{token[:-2]}xx"), 404, "not_found")
    expired = signing.dumps(
        {"f": mine["id"].replace("-", ""), "e": int(time.time()) - 1, "d": 0}, salt=SIGNED_URL_SALT
    )
    assert_error(anon.get(f"/api/files/signed/{expired}"), 410, "link_expired")
    alice.delete(f"/api/files/{mine['id']}/")
    assert_error(anon.get(link.removeprefix("http://testserver")), 404, "not_found")


def test_seed_upload_of_several_files_reports_each(alice, settings):
    settings.NEXUS_FILE_MAX_BYTES = 1000
    response = alice.post(
        "/api/file/storage",
        {"files": [_named("a.txt", b"alpha"), _named("b.bin", ELF), _named("c.png", PNG)], "folder": "inbox"},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success_count"] == 2 and body["failed_count"] == 1
    assert [r["success"] for r in body["results"]] == [True, False, True]
    assert body["results"][1]["code"] == "unsupported_media_type"
    assert body["results"][0]["object_name"] == "inbox/a.txt"

    # nothing stored: the status of the failure, with the seed's shape and the error's
    refused = alice.post("/api/file/storage", {"files": [_named("big.txt", b"x" * 1001)]}, format="multipart")
    assert refused.status_code == 413
    assert refused.json()["success_count"] == 0 and refused.json()["code"] == "file_too_large"
    default_folder = alice.post(
        "/api/file/storage", {"files": [_named("d.txt", b"delta")]}, format="multipart"
    )
    assert default_folder.json()["results"][0]["object_name"] == "attachments/d.txt"
    assert_error(
        alice.post("/api/file/storage", {"folder": "x"}, format="multipart"), 400, "validation_error"
    )
    assert_error(alice.post("/api/file/storage", {"files": []}, format="json"), 400, "validation_error")


def test_seed_list_filters_by_prefix_and_limits(alice, user):
    for name, folder in (("1.txt", "a"), ("2.txt", "a"), ("3.txt", "b")):
        file_store(owner=user, name=name, content=name.encode() * 3, folder=folder)
    listed = alice.get("/api/file/storage", {"prefix": "a/"}).json()
    assert listed["total"] == 2 and {f["name"] for f in listed["files"]} == {"a/1.txt", "a/2.txt"}
    assert all(f["url"].startswith("http://testserver/api/files/signed/") for f in listed["files"])
    bare = alice.get("/api/file/storage", {"limit": "1", "include_urls": "false"}).json()
    assert bare["total"] == 1 and "url" not in bare["files"][0]
    assert_error(alice.get("/api/file/storage", {"limit": "none"}), 400, "validation_error")
    assert_error(alice.get("/api/file/storage", {"include_urls": "maybe"}), 400, "validation_error")


def test_concurrent_users_share_no_names(user, other_user):
    a, _ = file_store(owner=user, name="same.txt", content=b"one")
    b, _ = file_store(owner=other_user, name="same.txt", content=b"one")
    assert a.pk != b.pk and a.name == b.name == "same.txt"
    alice, mallory = bearer_client(user), bearer_client(other_user)
    batch = alice.post(
        "/api/file/storage/batch-urls",
        {"object_names": ["same.txt", "nope.txt"], "expires": 60},
        format="json",
    ).json()
    assert [u["success"] for u in batch["urls"]] == [True, False]
    assert batch["urls"][1]["object_name"] == "nope.txt"
    assert mallory.delete("/api/file/storage/same.txt").json()["success"] is True
    assert StoredFile.objects.filter(pk=a.pk).exists() and not StoredFile.objects.filter(pk=b.pk).exists()


def test_deleting_a_user_deletes_their_files_bytes(user, other_user):
    mine, _ = file_store(owner=user, name="a.txt", content=b"mine")
    theirs, _ = file_store(owner=other_user, name="b.txt", content=b"theirs")
    user.delete()
    assert not default_storage.exists(mine.blob.name)
    assert default_storage.exists(theirs.blob.name)


def test_too_many_files_in_one_request_is_a_clear_400(alice, settings):
    count = settings.NEXUS_FILE_MAX_PER_UPLOAD + 1
    many = [_named(f"{n}.txt", f"file {n}".encode()) for n in range(count)]
    assert_error(
        alice.post("/api/file/storage", {"files": many}, format="multipart"), 400, "validation_error"
    )
    again = [_named(f"{n}.txt", f"file {n}".encode()) for n in range(count)]
    response = alice.post("/api/files/", {"file": again}, format="multipart")
    assert response.status_code == 400 and response.json()["code"] in {"validation_error", "parse_error"}
    assert not StoredFile.objects.exists()


def test_hostile_names_are_refused_cleanly(alice, user):
    for path in ("/api/file/storage/a%00b.txt", "/api/file/storage/" + "x" * 5000):
        assert_error(alice.get(path), 404, "not_found")
    batch = alice.post("/api/file/storage/batch-urls", {"object_names": ["a\x00b"]}, format="json")
    assert batch.status_code == 200 and batch.json()["urls"][0]["success"] is False
    assert_error(alice.get("/api/file/storage", {"prefix": "a\x00"}), 400, "validation_error")
    with pytest.raises(ValidationFailed):
        file_store(owner=user, name="a\x00.txt", content=b"x")
    with pytest.raises(ValidationFailed):
        file_store(owner=user, name="a.txt", content=b"x", folder="f\x00")


def test_two_uploads_at_once_cannot_both_pass_the_quota(user, settings):
    import threading

    from django.db import connection

    from files.services import QuotaExceeded

    settings.NEXUS_FILE_QUOTA_BYTES = 100
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def store(n: int) -> None:
        try:
            start.wait()
            file_store(owner=user, name=f"{n}.txt", content=bytes([65 + n]) * 60)
            outcomes.append("stored")
        except QuotaExceeded:
            outcomes.append("quota")
        finally:
            connection.close()

    threads = [threading.Thread(target=store, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["quota", "stored"]
    assert StoredFile.objects.filter(owner=user).count() == 1
