"""Read rosbag2 bags (MCAP or sqlite3) without ROS, including damaged ones.

``open_bag`` uses the ``rosbags`` reader for intact bags. A bag that reader refuses -- no
``metadata.yaml`` (the recorder was killed), an MCAP file without its summary/footer (the file
was cut short), a bare ``.mcap``/``.db3`` file -- is read record by record instead, and
everything up to the first damaged record is kept; ``BagSource.warnings`` says what happened.

Message types: the Jazzy typestore, the interbotix types we know (``bag_recorder``), and any
definition stored in the bag itself. Topics whose type cannot be resolved are listed in
``BagSource.unknown`` and never decoded.
"""

from __future__ import annotations

import io
import sqlite3
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qwen_vla_ros.errors import QwenVLAError

MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagError(QwenVLAError):
    """The bag cannot be read at all, or lacks what was asked of it."""


class BagReadError(BagError):
    """Reading stopped part-way; messages before ``log_ns`` were delivered."""

    def __init__(self, message: str, log_ns: int | None = None) -> None:
        super().__init__(message)
        self.log_ns = log_ns


@dataclass
class BagSource:
    path: Path
    storage: str  # "mcap" | "sqlite3"
    topics: dict[str, str] = field(default_factory=dict)  # topic -> message type
    counts: dict[str, int] = field(default_factory=dict)
    msgdefs: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (format, text)
    start_ns: int = 0
    end_ns: int = 0
    indexed: bool = True  # False: read record by record (damaged or bare file)
    warnings: list[str] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)  # topic -> type nobody can decode
    latched: set[str] = field(default_factory=set)  # recorded with transient-local QoS
    _files: list[Path] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max(0.0, (self.end_ns - self.start_ns) * 1e-9)

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time ns, CDR bytes) in log-time order. Raises ``BagReadError`` where
        the data stops making sense; everything before has been yielded."""
        wanted = set(self.topics if topics is None else topics)
        if self.indexed:
            yield from self._indexed(wanted)
        elif self.storage == "mcap":
            for f in self._files:
                for topic, _, t, raw in _scan_mcap(f):
                    if topic in wanted:
                        yield topic, t, raw
        else:
            for f in self._files:
                yield from _scan_sqlite(f, wanted)

    def _indexed(self, wanted: set[str]) -> Iterator[tuple[str, int, bytes]]:
        from rosbags.rosbag2 import Reader

        last = None
        try:
            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if c.topic in wanted]
                for conn, t, raw in reader.messages(connections=conns):
                    last = t
                    yield conn.topic, t, raw
        except BagError:
            raise
        except Exception as exc:
            raise BagReadError(f"bag {self.path} is damaged after "
                               f"{_rel(last, self.start_ns)}: {type(exc).__name__}: {exc}",
                               last) from exc

    # ---- types --------------------------------------------------------------------------
    def typestore(self):
        """Our typestore plus the definitions this bag carries; fills ``unknown``."""
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        from qwen_vla_ros.replay.typestore import typestore

        store = typestore()
        for topic, typ in sorted(self.topics.items()):
            if typ in store.types:
                continue
            fmt, text = self.msgdefs.get(typ, ("", ""))
            try:
                if fmt == "ros2msg" and text:
                    store.register(_types_from_msg_bundle(text, typ, get_types_from_msg))
                elif fmt in ("ros2idl", "omgidl") and text:
                    store.register(get_types_from_idl(text))
            except Exception as exc:  # a broken definition: that type stays unknown
                self.warnings.append(f"cannot parse the stored definition of {typ}: {exc}")
            if typ not in store.types:
                self.unknown[topic] = typ
        return store


def _rel(t: int | None, t0: int) -> str:
    return "the start" if t is None else f"t={(t - t0) * 1e-9:.3f} s"


def _types_from_msg_bundle(text: str, name: str, parse) -> dict:
    """An MCAP ros2msg schema: the type's definition, then '====' + 'MSG: pkg/Type' blocks."""
    types: dict = {}
    blocks = [b for b in _split_bundle(text)]
    types.update(parse(blocks[0][1], name))
    for sub, body in blocks[1:]:
        if "/msg/" not in sub:
            sub = sub.replace("/", "/msg/", 1)
        types.update(parse(body, sub))
    return types


def _split_bundle(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [("", "")]
    for line in text.splitlines():
        if line.startswith("=====") and len(set(line.strip())) == 1:
            out.append(("", ""))
        elif line.startswith("MSG: ") and not out[-1][1].strip():
            out[-1] = (line[5:].strip(), "")
        else:
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


# ---- opening ----------------------------------------------------------------------------
def open_bag(path: str | Path) -> BagSource:
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_dir() and (path / "metadata.yaml").exists():
        try:
            return _open_indexed(path)
        except BagError:
            raise
        except Exception as exc:
            files = _data_files(path)
            if not files:
                raise BagError(f"bag {path}: {type(exc).__name__}: {exc}") from exc
            src = _open_scanned(path, files)
            src.warnings.insert(0, f"the bag's index is unreadable ({exc}); read record by "
                                   "record instead")
            return src
    files = _data_files(path)
    if not files:
        raise BagError(f"{path} is not a rosbag2: no metadata.yaml and no .mcap/.db3 files")
    src = _open_scanned(path, files)
    if path.is_dir():
        src.warnings.insert(0, "metadata.yaml is missing (recording interrupted?); read "
                               "record by record instead")
    return src


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix in (".mcap", ".db3") else []
    return sorted([*path.glob("*.mcap"), *path.glob("*.db3")])


def _open_indexed(path: Path) -> BagSource:
    from rosbags.rosbag2 import Reader

    fmt = {1: "ros2msg", 2: "ros2idl"}
    import yaml

    meta = yaml.safe_load((path / "metadata.yaml").read_text()) or {}
    storage = (meta.get("rosbag2_bagfile_information") or {}).get("storage_identifier", "")
    with Reader(path) as reader:
        src = BagSource(path, "sqlite3" if storage == "sqlite3" else "mcap")
        for c in reader.connections:
            src.topics[c.topic] = c.msgtype
            src.counts[c.topic] = src.counts.get(c.topic, 0) + c.msgcount
            for q in getattr(c.ext, "offered_qos_profiles", None) or ():
                if q.durability.name == "TRANSIENT_LOCAL":
                    src.latched.add(c.topic)
            if c.msgdef and c.msgdef.data:
                src.msgdefs[c.msgtype] = (fmt.get(c.msgdef.format.value, ""), c.msgdef.data)
        src.start_ns, src.end_ns = reader.start_time, reader.end_time
        if reader.message_count == 0:
            src.start_ns = src.end_ns = 0
    return src


def _open_scanned(path: Path, files: list[Path]) -> BagSource:
    """Learn topics, counts and time range by scanning (what the index would have said)."""
    storage = "mcap" if files[0].suffix == ".mcap" else "sqlite3"
    src = BagSource(path, storage, indexed=False, _files=files)
    t_min, t_max = None, None
    try:
        for f in files:
            it = (_scan_mcap(f, src) if storage == "mcap"
                  else ((tp, None, t, raw) for tp, t, raw in _scan_sqlite(f, None, src)))
            for topic, _, t, _ in it:
                src.counts[topic] = src.counts.get(topic, 0) + 1
                t_min = t if t_min is None else min(t_min, t)
                t_max = t if t_max is None else max(t_max, t)
    except BagReadError as exc:
        src.warnings.append(str(exc))
    src.start_ns, src.end_ns = t_min or 0, t_max or 0
    return src


# ---- MCAP record scan ---------------------------------------------------------------------
def _str(buf: io.BytesIO) -> str:
    (n,) = struct.unpack("<I", _exact(buf, 4))
    return _exact(buf, n).decode()


def _exact(buf, n: int) -> bytes:
    data = buf.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _scan_mcap(path: Path, src: BagSource | None = None
               ) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, log ns, data) for every message record, chunks included, until the file
    ends or a record is cut short (then ``BagReadError`` after yielding what came before)."""
    schemas: dict[int, tuple[str, str, str]] = {}
    channels: dict[int, tuple[str, str]] = {}
    last = None
    count = 0

    def cut_short(what: str) -> BagReadError:
        return BagReadError(f"{path.name} is truncated: {what} after {count} messages", last)

    with path.open("rb") as f:
        if f.read(8) != MCAP_MAGIC:
            raise BagReadError(f"{path.name} is not an MCAP file (bad magic)")
        stack = [f]
        while stack:
            buf = stack[-1]
            head = buf.read(9)
            if len(head) == 0 and buf is not f:
                if isinstance(buf, _Cut):
                    raise cut_short("the last chunk is cut")
                stack.pop()
                continue
            if len(head) < 9:
                if len(head) == 0:
                    break
                raise cut_short("a record header is cut")
            op, length = head[0], struct.unpack("<Q", head[1:])[0]
            body = buf.read(length)
            if len(body) != length:
                if op == 0x06 and buf is f:  # a cut chunk: its whole records are still good
                    partial = _partial_chunk(body)
                    if partial is not None:
                        stack.append(_Cut(partial))
                        continue
                raise cut_short(f"a record of {length} bytes has {len(body)}")
            rec = io.BytesIO(body)
            try:
                if op == 0x02:  # footer: done
                    break
                if op == 0x03:
                    (sid,) = struct.unpack("<H", _exact(rec, 2))
                    name, enc = _str(rec), _str(rec)
                    (n,) = struct.unpack("<I", _exact(rec, 4))
                    schemas[sid] = (name, enc, _exact(rec, n).decode(errors="replace"))
                elif op == 0x04:
                    cid, sid = struct.unpack("<HH", _exact(rec, 4))
                    topic = _str(rec)
                    name, enc, text = schemas.get(sid, ("", "", ""))
                    channels[cid] = (topic, name)
                    if src is not None:
                        src.topics[topic] = name
                        if text:
                            src.msgdefs[name] = (enc, text)
                elif op == 0x05:
                    cid, _, log_ns, _ = struct.unpack("<HIQQ", _exact(rec, 22))
                    if cid in channels:
                        last = log_ns
                        count += 1
                        topic, name = channels[cid]
                        yield topic, name, log_ns, rec.read()
                elif op == 0x06:
                    _, _, size, _ = struct.unpack("<QQQI", _exact(rec, 28))
                    compression = _str(rec)
                    (n,) = struct.unpack("<Q", _exact(rec, 8))
                    data = _exact(rec, n)
                    if compression:
                        from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

                        if compression not in DECOMPRESSORS:
                            raise BagReadError(f"{path.name}: chunk compression "
                                               f"'{compression}' is not supported", last)
                        data = DECOMPRESSORS[compression](data, size)
                    stack.append(io.BytesIO(data))
            except EOFError:
                raise BagReadError(f"{path.name}: malformed record (opcode {op:#x})",
                                   last) from None


class _Cut(io.BytesIO):
    """The readable records of a chunk whose end is missing."""


def _partial_chunk(body: bytes) -> bytes | None:
    """The records of an uncompressed chunk record cut short, or None."""
    rec = io.BytesIO(body)
    try:
        _exact(rec, 28)
        compression = _str(rec)
        _exact(rec, 8)
    except EOFError:
        return None
    return rec.read() if compression == "" else None


def _scan_sqlite(path: Path, wanted: set[str] | None, src: BagSource | None = None
                 ) -> Iterator[tuple[str, int, bytes]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        topics = {tid: (name, typ) for tid, name, typ in
                  db.execute("SELECT id, name, type FROM topics")}
        if src is not None:
            for name, typ in topics.values():
                src.topics[name] = typ
            try:
                for typ, enc, text in db.execute("SELECT topic_type, encoding, "
                                                 "encoded_message_definition FROM "
                                                 "message_definitions"):
                    src.msgdefs[typ] = (enc, text)
            except sqlite3.Error:
                pass  # older bags have no definitions table
        for tid, t, data in db.execute("SELECT topic_id, timestamp, data FROM messages "
                                       "ORDER BY timestamp"):
            name = topics.get(tid, ("", ""))[0]
            if wanted is None or name in wanted:
                yield name, t, bytes(data)
    except sqlite3.Error as exc:
        raise BagReadError(f"{path.name}: sqlite3 error: {exc}", None) from exc
