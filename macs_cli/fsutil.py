"""Placing outputs without losing anything a user has.

Every output is written under a temporary name beside its target and moved into place at the
end. The rules, which every verb follows through this module:

- The final move never replaces what appeared meanwhile (``renameat2(RENAME_NOREPLACE)``, or a
  link / an empty-folder claim where that is not available, or an exclusive-create claim where
  hard links are missing too): two runs writing the same output
  at once cannot silently replace each other's result; the later one reports the clash.
- ``--force`` replaces only a previous output of the same kind (an :class:`OutputKind` says how
  to recognise one: a stems folder with our manifest, an embeddings file with our sidecar...);
  anything else at the target is refused, with or without ``--force``.
- Temporaries are named ``.<target>.<pid>-<random>.macs-tmp[suffix]`` and locked (``flock``) by
  the process that writes them. One left behind by a killed process is unlocked: the next
  start in the same folder removes it (only ours, recognised by that name, unlocked, and older
  than a few seconds; leftovers of macs 0.1 without a lock only when named after the same
  target and older than a day).
- Files, and the folders holding them, are fsync'ed before they are moved into place, so a crash
  leaves either the old output or the complete new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .errors import MacsError, OutputExistsError

TMP_MARK = ".macs-tmp"     # in every temporary name we create
STALE_AFTER_S = 10.0       # an unlocked temporary younger than this may be one being created
LEGACY_STALE_AFTER_S = 86400.0   # macs 0.1's temporaries had no lock: removed only after a day


# -- modes, sync ---------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to disk (best effort where the OS refuses folders)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # folders on some file systems
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every regular file below ``root`` and every folder, deepest first."""
    root = Path(root)
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink():
                fsync_path(p)
        fsync_path(Path(folder))


# -- regular files -----------------------------------------------------------------------------
def require_regular_file(path: Path, what: str = "file") -> Path:
    """``path`` if it names a regular file (links followed); else a one-line MacsError.

    FIFOs, sockets and devices are refused: opening a FIFO blocks until something writes to it,
    and ``/dev/zero`` never ends."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise MacsError(f"{path}: broken link (its target {os.readlink(path)} does not exist)") from None
        raise MacsError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise MacsError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except ValueError:   # a NUL byte (from a CSV or a manifest): no file can have that name
        raise MacsError(f"{str(path)!r}: not a usable {what} name (it holds a NUL byte)") from None
    if stat.S_ISDIR(st.st_mode):
        raise MacsError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = "a pipe" if stat.S_ISFIFO(st.st_mode) else "a device" \
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" \
            if stat.S_ISSOCK(st.st_mode) else "special"
        raise MacsError(f"{path}: not a regular file ({kind}); save the data to a file first")
    return path


# -- what --force may replace ------------------------------------------------------------------
@dataclass(frozen=True)
class OutputKind:
    """A kind of output and how to recognise a previous one of it (the only thing ``--force``
    may replace)."""

    label: str                          # "macs separate output"
    test: Callable[[Path], bool]        # True if the path holds an output of this kind

    def owns(self, path: Path) -> bool:
        """Whether ``path`` holds an output of this kind. Only regular files and folders are
        looked into: a FIFO, socket or device at an output path is never ours, and is never
        opened (opening a FIFO blocks until something writes to it)."""
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            return False
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return False
        return bool(self.test(Path(path)))


def read_json(path: Path) -> dict | None:
    """A JSON object from a small regular file, or None (missing, not JSON, not an object, huge)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
            return None
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def json_kind(label: str, formats: tuple[str, ...], legacy_keys: tuple[str, ...] = ()) -> OutputKind:
    """A JSON file of ours: its ``format`` (``<family>-v<N>``) has one of the families in
    ``formats``, or (written before formats were recorded) it holds every one of ``legacy_keys``."""

    def owns(path: Path) -> bool:
        data = read_json(path)
        if data is None:
            return False
        fmt = data.get("format")
        if isinstance(fmt, str):
            return re.sub(r"-v\d+$", "", fmt) in formats
        return bool(legacy_keys) and all(k in data for k in legacy_keys)

    return OutputKind(label, owns)


def sibling_kind(label: str, sidecar: Callable[[Path], Path], kind: OutputKind,
                 magic: bytes | None = None) -> OutputKind:
    """A file that belongs to an output whose sidecar (``sidecar(path)``) is of ``kind``, and
    (if given) starts with ``magic``."""

    def owns(path: Path) -> bool:
        try:
            if not Path(path).is_file():
                return False
            if magic is not None:
                with open(path, "rb") as f:
                    if f.read(len(magic)) != magic:
                        return False
        except OSError:
            return False
        return kind.owns(sidecar(Path(path)))

    return OutputKind(label, owns)


# -- temporaries -------------------------------------------------------------------------------
_OURS = re.compile(rf"^\..+\.\d+-[0-9a-f]{{8}}{re.escape(TMP_MARK)}(-old)?(\..*)?\Z", re.DOTALL)   # any name, newlines too
# macs 0.1's mkstemp/mkdtemp names: ".<name>.<8 chars>.tmp<name's suffix>" and ".<name>.old-<pid>"
_LEGACY = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?|old-\d+)\Z", re.DOTALL)
# a previous output moved aside while a --force set was placed: ".<target>.<pid>-<8 hex>.macs-tmp-old"
_OLD = re.compile(rf"^\.(?P<name>.+)\.\d+-[0-9a-f]{{8}}{re.escape(TMP_MARK)}-old\Z", re.DOTALL)
_swept: set[str] = set()                       # folders swept of our temporaries
_swept_legacy: set[tuple[str, str]] = set()    # (folder, target name) swept of macs 0.1's


def _lock(fd: int, block: bool = True) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return True
    except OSError:   # held by another process (or a file system without locks: never swept)
        return False


def _open_for_lock(path: Path) -> int:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)   # never waits on a FIFO
    if path.is_dir():
        flags |= getattr(os, "O_DIRECTORY", 0)
    return os.open(path, flags)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _legacy(name: str, target_name: str) -> bool:
    """A leftover of macs 0.1 for the output named ``target_name`` (``.<target>.<8 chars>.tmp<suffix>``
    or ``.<target>.old-<pid>``). Only the same target's: a folder may hold dotfiles of the user's
    that merely look like these (``.bashrc.old-1``, ``.config.old-2019/``)."""
    m = _LEGACY.match(name)
    if not m or m.group("name") != target_name:
        return False
    return (m.group("suffix") or "") == (Path(target_name).suffix if m.group("suffix") else "")


def sweep_stale(target: Path) -> list[Path]:
    """Remove temporaries that killed processes left beside ``target`` (ours only: named as we
    name them, not locked by a live process, not just created; macs 0.1's unlocked ones only
    when a day old and named after ``target`` itself). A previous output a killed run had moved
    aside is removed only once its replacement stands under its name (:func:`_spent_aside`). Each folder is swept once per process
    (macs 0.1's leftovers once per target); returns what was removed."""
    target = Path(target)
    parent = target.parent
    key = os.path.abspath(parent)
    ours_done = key in _swept
    legacy_done = (key, target.name) in _swept_legacy
    if (ours_done and legacy_done) or not parent.is_dir():
        return []
    _swept.add(key)
    _swept_legacy.add((key, target.name))
    removed = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(".")]
    except OSError:
        return []
    for entry in entries:
        path = Path(entry.path)
        mine = not ours_done and _OURS.match(entry.name)
        old = not legacy_done and _legacy(entry.name, target.name)
        if not (mine or old):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue   # links, and FIFOs (opening one to test its lock would block) are never ours
        age = now - st.st_mtime
        if mine:
            if age < STALE_AFTER_S:
                continue
            try:
                fd = _open_for_lock(path)
            except OSError:
                continue
            try:
                if not _lock(fd, block=False):
                    continue
                if _OLD.match(entry.name) and not _spent_aside(parent, entry.name):
                    continue   # a previous output whose replacement is not in place: maybe the only copy
                _remove(path)
                removed.append(path)
            finally:
                os.close(fd)
        elif age > LEGACY_STALE_AFTER_S:
            _remove(path)
            removed.append(path)
    return removed


def _spent_aside(parent: Path, name: str) -> bool:
    """Whether the previous output a killed run had set aside under ``name`` was replaced: the
    output it belongs to is there again (and is not the empty claim a run without renameat2 makes
    first). Where its output's name is unsure (it may have been cut short, see :func:`_tmp_name`)
    or nothing stands there, the aside may be the only copy of the user's previous output: it is
    kept (never removed, and not moved back either: it may be one file of a set that was half
    placed)."""
    m = _OLD.match(name)
    if m is None or len(os.fsencode(name)) >= NAME_MAX:
        return False
    try:
        st = os.lstat(parent / m.group("name"))
    except OSError:
        return False
    if stat.S_ISREG(st.st_mode):
        return st.st_size > 0
    if stat.S_ISDIR(st.st_mode):
        try:
            return any(True for _ in os.scandir(parent / m.group("name")))
        except OSError:
            return False
    return False


NAME_MAX = 255   # bytes in one file name on Linux file systems


def _tmp_name(name: str, tail: str) -> str:
    """``.<name>.<tail>``, with ``<name>`` cut short where needed so that the whole fits in one file
    name: an output whose own name fits is never refused because of its temporary's longer name."""
    room = NAME_MAX - len(os.fsencode(f"..{tail}"))
    if len(os.fsencode(name)) > room:
        # cut between characters, never inside one: half a UTF-8 character would make a name
        # that libraries passing paths as UTF-8 (libsndfile through soundfile) cannot open
        kept, used = [], 0
        for ch in name:
            size = len(os.fsencode(ch))
            if used + size > room:
                break
            kept.append(ch)
            used += size
        name = "".join(kept) or "x"
    return f".{name}.{tail}"


class _Temp:
    """A locked temporary file or folder beside ``target``."""

    def __init__(self, target: Path, directory: bool, suffix: str = ""):
        self.target = Path(target)
        self.directory = directory
        parent = self.target.parent
        for _ in range(100):
            tail = f"{os.getpid()}-{secrets.token_hex(4)}{TMP_MARK}"
            name = _tmp_name(self.target.name, tail + (suffix if len(os.fsencode(suffix)) < 100 else ""))
            path = parent / name
            try:
                if directory:
                    os.mkdir(path, 0o700)
                    self.fd = _open_for_lock(path)
                else:
                    self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                                      0o600)
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover
            raise MacsError(f"{parent}: cannot create a temporary name")
        self.path = path
        _lock(self.fd)

    def publish_mode(self) -> None:
        """The mode a plain open()/mkdir() would have given it, set through the descriptor held since
        creation (never by path: in a shared folder the name could have been swapped for a link)."""
        mode = (0o777 if self.directory else 0o666) & ~_umask()
        with contextlib.suppress(OSError):
            held, now = os.fstat(self.fd), os.lstat(self.path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                os.fchmod(self.fd, mode)
            elif stat.S_ISREG(now.st_mode) or stat.S_ISDIR(now.st_mode):   # a writer that replaced the file
                os.chmod(self.path, mode)

    previous = False   # True once an exchange has put the previous output under this name

    def release(self) -> None:
        """Remove the temporary if it is still there, and unlock. Where an exchange has put the
        previous output under its name and nothing put it back, that is kept, never removed."""
        try:
            if self.previous and os.path.lexists(self.path):
                with contextlib.suppress(OSError):
                    os.rename(self.path, _kept_name(self.target))
            elif os.path.lexists(self.path):
                _remove(self.path)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


# -- moving into place -------------------------------------------------------------------------
_RENAME_NOREPLACE = 1
_renameat2 = None


def _renameat2_fn():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2


def rename_noreplace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` unless something is at ``dst`` (FileExistsError then, and
    ``src`` stays where it is). Atomic: no moment exists where a concurrent writer's ``dst``
    could be replaced."""
    src, dst = Path(src), Path(dst)
    fn = _renameat2_fn()
    if fn:
        at_fdcwd = -100
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "already exists", str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    # no renameat2 (or a file system without the flag)
    if src.is_dir() and not src.is_symlink():
        os.mkdir(dst)          # the claim: fails if anything is there
        try:
            os.rename(src, dst)  # replaces only the empty folder just made
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(dst)
            raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(dst)) from None
    else:
        try:
            os.link(src, dst)  # fails if anything is there
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EINVAL):
                raise
            _claim_then_replace(src, dst)   # a file system without hard links (bucket mounts...)
            return
        os.unlink(src)


def _claim_then_replace(src: Path, dst: Path) -> None:
    """Where neither renameat2 nor hard links exist: create ``dst`` empty (fails if anything is
    there), then move ``src`` over that claim of ours."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    try:
        os.replace(src, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dst)
        raise


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (``renameat2(RENAME_EXCHANGE)``); False where the system or
    the file system cannot."""
    fn = _renameat2_fn()
    if not fn:
        return False
    if fn(-100, os.fsencode(a), -100, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class OutputSet:
    """Outputs written together and placed together: all of them, or none.

    ``path(target, kind)`` gives a temporary path to write each target to (``directory=True``: a
    folder); on success the set checks every target first (nothing there; or, with ``force``, a
    previous output of the same kind), then moves them into place in the order given; if one
    cannot be placed, those already placed by this set are taken back out and the error says why.
    ``overwrite=True`` on a target marks a file of the caller's own (a checkpoint, a cache entry):
    it is replaced whatever is there.
    """

    def __init__(self, force: bool = False):
        self.force = force
        self._items: list[tuple[Path, _Temp, OutputKind | None, bool]] = []

    def path(self, target: Path, kind: OutputKind | None = None, directory: bool = False,
             overwrite: bool = False) -> Path:
        target = Path(target)
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MacsError(f"{parent}: cannot write output ({exc.strerror or exc})") from None
        if not overwrite:
            check_target(target, kind, self.force)
        sweep_stale(target)
        try:
            tmp = _Temp(target, directory, "" if directory else target.suffix)
        except OSError as exc:
            raise MacsError(f"{parent}: cannot write output ({exc.strerror or exc})") from None
        self._items.append((target, tmp, kind, overwrite))
        return tmp.path

    def commit(self) -> list[Path]:
        for target, tmp, kind, overwrite in self._items:
            if not overwrite:
                check_target(target, kind, self.force, meanwhile=True)
        for _, tmp, _, _ in self._items:
            tmp.publish_mode()
            fsync_tree(tmp.path) if tmp.directory else fsync_path(tmp.path)
        _test_hold()
        placed: list[tuple[Path, _Temp, bool, _Aside | None]] = []   # (target, ..., the previous output kept aside)
        try:
            for target, tmp, kind, overwrite in self._items:   # one that fails places nothing
                aside = _place(tmp, target, kind, self.force or overwrite, overwrite)
                placed.append((target, tmp, overwrite, aside))
            for parent in {t.parent for t, *_ in self._items}:
                fsync_path(parent)
        except BaseException:
            for target, tmp, overwrite, aside in reversed(placed):   # ours a moment ago: take them back
                try:                                                 # out and return what they replaced;
                    if not overwrite:                                # every one is tried, whatever one raises
                        _put_back(target, tmp, aside)
                except BaseException:   # noqa: S110 - the first error is the one reported
                    pass
                finally:
                    if aside is not None:
                        aside.release()
            raise
        for *_, aside in placed:          # every lock is released, whatever a removal raises
            if aside is not None:
                with contextlib.suppress(OSError):
                    _remove(aside.path)
                aside.release()
        return [t for t, *_ in self._items]

    def abort(self) -> None:
        for _, tmp, _, _ in self._items:
            tmp.release()
        self._items = []

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.abort()


HOLD_ENV = "MACS_TEST_HOLD_BEFORE_PLACE"   # testing hook: pause before outputs are placed


def _test_hold() -> None:
    """With $MACS_TEST_HOLD_BEFORE_PLACE=F: create F.ready, then wait (up to 60 s) for F to exist,
    so that a test can let another process write the same output between the checks and the
    placement."""
    flag = os.environ.get(HOLD_ENV)
    if not flag:
        return
    Path(flag + ".ready").touch()
    deadline = time.time() + 60
    while not os.path.exists(flag) and time.time() < deadline:
        time.sleep(0.02)


def check_target(target: Path, kind: OutputKind | None, force: bool, meanwhile: bool = False) -> None:
    """Raise OutputExistsError unless ``target`` may be written: nothing is there, or ``force``
    and what is there is a previous output of ``kind``."""
    target = Path(target)
    if not os.path.lexists(target):
        return
    if meanwhile and not force:
        raise OutputExistsError(f"{target}: appeared while this run was writing it (another run writing "
                                "the same output?); left as it is, this result was not placed")
    if kind is not None and (target.is_symlink() or not kind.owns(target)):
        raise OutputExistsError(f"{target}: exists and is not a {kind.label}, so it is never replaced, "
                                "not even with --force (move it away or choose another output)")
    if not force:
        raise OutputExistsError(f"{target}: already exists (use --force to replace it)")
    if kind is None:
        raise OutputExistsError(f"{target}: exists and is not an output of this command, so it is never "
                                "replaced (move it away or choose another output)")


def output_state(parts: list[tuple[Path, OutputKind]]) -> tuple[str, Path | None]:
    """The state of an output made of several files (an array and its sidecar...):
    ``("absent", None)``, ``("complete", None)`` (every part there and ours), ``("partial", None)``
    (some parts there, all ours: an interrupted write) or ``("foreign", path)`` (``path`` is
    something else, which is never replaced)."""
    present = [(p, k) for p, k in parts if os.path.lexists(p)]
    for p, k in present:
        if Path(p).is_symlink() or not k.owns(Path(p)):
            return "foreign", Path(p)
    if not present:
        return "absent", None
    return ("complete" if len(present) == len(parts) else "partial"), None


def plan_output(parts: list, force: bool, skip_existing: bool | None = None) -> tuple[str, bool]:
    """What to do with an output made of ``parts`` ([(path, OutputKind)], the main file first):
    ``("write", force_flag)`` or ``("skip", False)`` (complete, ``--skip-existing``). Raises
    OutputExistsError when it exists and may not be replaced: something that is not ours is never
    replaced; ours needs ``--force``, except that an interrupted write's leftover (some parts
    missing) is redone by ``--skip-existing`` too. ``skip_existing=None``: the verb has no such
    option."""
    state, where = output_state(parts)
    main = parts[0][0]
    if state == "absent":
        return "write", force
    if state == "foreign":
        kind = dict((str(p), k) for p, k in parts)[str(where)]
        hint = ""
        if where == main and len(parts) > 1 and not os.path.lexists(parts[1][0]):
            hint = (f" (its sidecar {parts[1][0].name} is missing: left by an interrupted run of an older "
                    "macs? remove it)")
        raise OutputExistsError(f"{where}: exists and is not a {kind.label}, so it is never replaced, not even "
                                f"with --force{hint or ' (move it away or choose another output)'}")
    if state == "complete":
        if skip_existing:
            return "skip", False
        if force:
            return "write", True
        raise OutputExistsError(f"{main}: already exists (use --force to replace it"
                                + (", or --skip-existing to keep it)" if skip_existing is not None else ")"))
    if force or skip_existing:            # partial: an interrupted write of ours
        return "write", True
    raise OutputExistsError(f"{main}: an incomplete earlier output is there (use --force or --skip-existing to "
                            "write it again)")


@dataclass
class _Aside:
    """Where a replaced previous output lies until its set is placed, and the lock held on it
    (its inode's: a run sweeping this folder meanwhile sees it as live and leaves it; without
    the lock a hard-linked aside, which keeps the old file's mtime, looked stale at once)."""

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


HOLD_TRIES = 40   # x 25 ms: how long a previous output's lock is waited for (another run may hold it)


def _hold(path: Path) -> int | None:
    """A descriptor holding an exclusive lock on the file or folder at ``path``, waiting up to about
    a second while another process holds it, then an OutputExistsError (another run is placing
    it). None where it cannot be opened or the file system has no locks: then the previous output
    is set aside unlocked, as before, and :func:`_put_back` checks it is still there."""
    import fcntl

    try:
        fd = _open_for_lock(path)
    except OSError:
        return None
    for _ in range(HOLD_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.025)
        except OSError:
            os.close(fd)
            return None
    os.close(fd)
    raise OutputExistsError(f"{path}: another run is replacing it at this moment; left as it is, this "
                            "result was not placed")


def _place(tmp: _Temp, target: Path, kind: OutputKind | None, replace: bool, overwrite: bool) -> _Aside | None:
    """Move ``tmp`` onto ``target``. Returns where the previous output replaced with ``replace``
    now lies (a hidden name beside ``target``, locked), kept until the whole set is placed so that
    a set that fails half-way can put it back; None when nothing was replaced (or ``overwrite``: a
    file of the caller's own, replaced in one step and not kept)."""
    if overwrite and not tmp.directory:
        os.replace(tmp.path, target)
        return None
    try:
        rename_noreplace(tmp.path, target)
        return None
    except FileExistsError:
        if not replace:
            raise OutputExistsError(f"{target}: appeared while this run was writing it (another run writing the "
                                    "same output?); left as it is, this result was not placed") from None
    if not overwrite:
        check_target(target, kind, True)
    held = _Aside(target, _hold(target))   # the previous output's inode, locked before it gets its hidden name
    try:
        held.path = _move_aside(tmp, target)
    except BaseException:
        held.release()
        raise
    return held


def _move_aside(tmp: _Temp, target: Path) -> Path:
    """Put ``tmp`` in place of the previous output at ``target``; returns the hidden name the
    previous output now has."""
    if tmp.directory and _exchange(tmp.path, target):   # one step: no moment without the old or the new
        tmp.previous = True                             # folder; the old one is now under the temporary's name
        return tmp.path
    aside = target.parent / _tmp_name(target.name, f"{os.getpid()}-{secrets.token_hex(4)}{TMP_MARK}-old")
    linked = False
    if not tmp.directory:            # a second name for the old file, then one atomic replace
        with contextlib.suppress(OSError):
            os.link(target, aside)
            linked = True
    if linked:
        try:
            os.replace(tmp.path, target)
        except BaseException:
            _remove(aside)           # the old file is still the target's
            raise
        return aside
    os.rename(target, aside)         # a folder, or a file system without hard links
    try:
        rename_noreplace(tmp.path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            rename_noreplace(aside, target)
        if isinstance(exc, FileExistsError):
            raise OutputExistsError(f"{target}: appeared while this run was replacing it; left as it is") from None
        raise
    return aside


KEPT_MARK = ".macs-kept"   # a previous output that could not be put back: never swept


def _kept_name(target: Path) -> Path:
    """A fresh ``.<name>.<pid>-<random>.macs-kept`` beside ``target``."""
    return target.parent / _tmp_name(target.name, f"{os.getpid()}-{secrets.token_hex(4)}{KEPT_MARK}")


def _is_ours(target: Path, tmp: _Temp) -> bool:
    """Whether ``target`` is still the file or folder this set placed there (the inode its
    temporary's descriptor holds), not something another run put there since."""
    try:
        now, held = os.lstat(target), os.fstat(tmp.fd)
    except (OSError, ValueError):
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _put_back(target: Path, tmp: _Temp, aside: _Aside | None) -> None:
    """Undo one placement of a set that failed: remove the new output and, if it replaced one, move
    the previous output back under its name. Only what this set placed is removed (another run may
    have placed its own output there since); where the previous output is no longer where it was
    set aside, the new output stays (never neither); where the previous output cannot be moved back
    it is kept beside it as ``.<name>.<pid>-<random>.macs-kept``, which no sweep and no clean-up
    removes, and a warning says where."""
    if aside is not None and not os.path.lexists(aside.path):
        return
    back = False
    if _is_ours(target, tmp):
        try:
            _remove(target)
        except OSError:
            pass
    if aside is None:
        return
    if not os.path.lexists(target):
        with contextlib.suppress(OSError):
            rename_noreplace(aside.path, target)
            back = True
    if not back:
        kept = _kept_name(target)
        try:
            os.rename(aside.path, kept)
        except OSError:
            return
        warnings.warn(f"{target}: the previous output could not be put back (the name is taken); "
                      f"it is kept as {kept}", stacklevel=3)


@contextlib.contextmanager
def atomic_path(target: Path, kind: OutputKind | None = None, force: bool = False,
                overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target`` (see
    :class:`OutputSet`: never over something that is not a previous output of ``kind``, never
    over something that appeared meanwhile unless ``force``). ``overwrite``: a file of the
    caller's own, replaced whatever is there."""
    with OutputSet(force) as out:
        yield out.path(target, kind, overwrite=overwrite)


@contextlib.contextmanager
def atomic_dir(target: Path, kind: OutputKind | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it becomes ``target``. An existing
    ``target`` is an error unless ``force`` and it is a previous output of ``kind``; it is only
    removed once the new content is complete, so a failure leaves what the user had untouched."""
    with OutputSet(force) as out:
        yield out.path(target, kind, directory=True)


def check_writable_dir(path: Path) -> None:
    """Raise a one-line MacsError unless ``path`` is a writable folder or could be created as one.
    Nothing is created: a run that fails before writing leaves no empty output folder behind."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise MacsError(f"{path}: output path exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise MacsError(f"{path}: output folder is not writable")
        return
    base = next((p for p in path.absolute().parents if p.exists()), None)
    if base is None or not base.is_dir():
        raise MacsError(f"{path}: cannot create output folder ({base} is not a folder)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise MacsError(f"{path}: cannot create output folder ({base} is not writable)")


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (OSError if it cannot be read)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def describe_os_error(exc: OSError, where: object | None = None) -> str:
    """``<file>: <reason>`` for an OSError, e.g. 'out/x/stem_00.wav: no space left on device'."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    elif exc.errno == errno.EFBIG:
        reason = "file too large for the file system or the process's file-size limit"
    name = where if where is not None else getattr(exc, "filename", None)
    return f"{name}: {reason[0].lower() + reason[1:] if reason else reason}" if name else reason
