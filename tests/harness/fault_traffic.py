"""The fault suite's traffic and its count: synthetic studies, a sender that behaves like an HL7 sender, the tally.

- ``studies(prefix, n)``: n synthetic studies (preliminary with findings, and its final), built from the demo sample
  messages (cli/sample, synthetic) with their own accession, order ids, patient id and MSH-10s.
- ``Sender``: original-mode acknowledgement as a sending system does it (HL7 v2.5.1 §2.9.2): one message at a time
  per connection, a message answered AE (or not answered) is sent again, same bytes and MSH-10, until AA (or AR).
- ``RisWatch``: when each accession's first draft reached the RIS (polled), for stall times.
- ``tally``: reports in, ACKed, drafts posted, duplicates, replacements, withheld (by the consistency policy) and
  lost, from what was sent, what the RIS received and what the store holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.mllp import MllpClient, MllpTarget, ack_code
from ops.capture_batch import latest_drafts
from ops.store import Store

SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample"
# (sample, its accession, its patient id): English CT chest, XR chest and US abdomen, three routes.
Template = tuple[str, str, str]
TEMPLATES: tuple[Template, ...] = (("01_ct_chest", "DEMO1001", "SYN0001"), ("02_xr_chest", "DEMO1002", "SYN0002"),
                                   ("04_us_abdomen", "DEMO1004", "SYN0004"))
# Chinese CT head (its own route, ct_head_zh): no other row sends it, so no signed report of that route is indexed
# for the retrieval drafter when the model worker goes down.
ZH_CT_HEAD: Template = ("06_ct_head_zh", "DEMO1006", "SYN0006")


@dataclass(frozen=True)
class Study:
    accession: str
    prelim: bytes
    final: bytes


def studies(prefix: str, n: int, *, templates: Sequence[Template] = TEMPLATES) -> list[Study]:
    out = []
    for i in range(n):
        name, accession, patient = templates[i % len(templates)]
        mine = f"{prefix}{i:03d}"

        def made(kind: str, name: str = name, accession: str = accession, patient: str = patient,
                 mine: str = mine) -> bytes:
            raw = (SAMPLE / f"{name}.{kind}.hl7").read_bytes()
            return raw.replace(accession.encode(), mine.encode()).replace(patient.encode(), f"SYN{mine}".encode())

        out.append(Study(mine, made("prelim"), made("final")))
    return out


def with_control_id(message: bytes, control_id: str) -> bytes:
    """The same message under another MSH-10 (MSH-10 is the tenth field counting MSH-1, the separator)."""
    msh, rest = message.split(b"\r", 1)
    fields = msh.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + b"\r" + rest


def control_id_of(message: bytes) -> str:
    return message.split(b"\r", 1)[0].split(b"|")[9].decode()


def accession_of(message: bytes) -> str:
    """OBR-18 (the accession the gateway sends drafts under, and our samples carry)."""
    for segment in message.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"OBR|"):
            fields = segment.split(b"|")
            return fields[18].decode() if len(fields) > 18 else ""
    return ""


@dataclass
class Sent:
    control_id: str
    accession: str
    kind: str  # prelim or final
    tries: int = 0
    answers: list[str] = field(default_factory=list)
    acked_at: float | None = None
    slowest_answer_s: float = 0.0  # the longest wait for any answer (AA or AE): "AE within 2 s"

    @property
    def acked(self) -> bool:
        return self.acked_at is not None


class Sender:
    def __init__(self, port: int, *, retry_s: float = 0.5, give_up_s: float = 120.0, answer_timeout_s: float = 10.0):
        self.target = MllpTarget("127.0.0.1", port)
        self.retry_s, self.give_up_s, self.answer_timeout_s = retry_s, give_up_s, answer_timeout_s

    async def send(self, messages: Sequence[tuple[str, bytes]], *, lanes: int = 4, spacing_s: float = 0.0,
                   on_each: Callable[[int], None] | None = None, into: list[Sent] | None = None) -> list[Sent]:
        """Sends every (kind, message) over ``lanes`` connections; ``spacing_s`` between starts (a steady feed);
        ``on_each(i)`` before message i is sent; the results are appended to ``into`` at once (readable meanwhile)."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(messages)):
            queue.put_nowait(i)
        results = [Sent(control_id_of(m), accession_of(m), kind) for kind, m in messages]
        if into is not None:
            into += results
        pace = asyncio.Lock()
        deadline = time.monotonic() + self.give_up_s

        async def lane() -> None:
            client = MllpClient(self.target, timeout_s=self.answer_timeout_s)
            try:
                while not queue.empty():
                    i = queue.get_nowait()
                    if spacing_s:
                        async with pace:
                            await asyncio.sleep(spacing_s)
                    if on_each is not None:
                        on_each(i)
                    await self._until_aa(client, messages[i][1], results[i], deadline)
            finally:
                await client.close()

        await asyncio.gather(*(lane() for _ in range(min(lanes, len(messages)) or 1)))
        return results

    async def _until_aa(self, client: MllpClient, message: bytes, sent: Sent, deadline: float) -> None:
        while time.monotonic() < deadline:
            sent.tries += 1
            started = time.monotonic()
            try:
                code = ack_code(await client.send(message))
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                code = "no answer"
            sent.slowest_answer_s = max(sent.slowest_answer_s, time.monotonic() - started)
            sent.answers.append(code)
            if code == "AA":
                sent.acked_at = time.monotonic()
                return
            if code == "AR":
                return
            await asyncio.sleep(self.retry_s)


@dataclass(frozen=True)
class Received:
    """One ORU^R01 the RIS took: MSH-10, OBR-18, OBX-11, and the MSH-10 it replaces (named by its NTE)."""

    control_id: str
    accession: str
    status: str
    replaces: str
    drafter: str  # llm or retrieval, from the provenance NTE
    text: str  # OBX-5, the drafted impression (escaped)

    @classmethod
    def of(cls, message: bytes) -> Received:
        first: dict[str, list[str]] = {}
        for segment in message.decode("utf-8", "replace").replace("\n", "\r").split("\r"):
            first.setdefault(segment[:3], segment.split("|") + [""] * 12)
        note = first.get("NTE", [""] * 4)[3]
        marker = "replaces AI-generated draft "
        replaces = note.split(marker, 1)[1].split(";")[0].strip() if marker in note else ""
        drafter = note.split("drafter ", 1)[1].split(";")[0].strip() if "drafter " in note else ""
        obx = first.get("OBX", [""] * 12)
        return cls(control_id=first["MSH"][9], accession=accession_of(message), status=obx[11], replaces=replaces,
                   drafter=drafter, text=obx[5])


class RisWatch:
    """Polls what the RIS received: the first time each accession's draft was seen."""

    def __init__(self, received: Callable[[], list[bytes]], every_s: float = 0.1):
        self._received, self._every = received, every_s
        self.first_seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def poll(self) -> None:
        now = time.monotonic()
        for message in self._received():
            self.first_seen.setdefault(accession_of(message), now)

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self._every)

    def start(self) -> RisWatch:
        self._task = asyncio.ensure_future(self._run())
        return self

    def stop(self) -> None:
        self.poll()
        if self._task is not None:
            self._task.cancel()


@dataclass
class Tally:
    row: str
    reports_in: int = 0
    acked: int = 0
    drafts_posted: int = 0
    duplicates: int = 0
    replaced: int = 0
    lost: int = 0
    recovery: str = ""
    lost_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    withheld: int = 0
    withheld_ids: list[str] = field(default_factory=list)


def withheld_by_policy(store: Store, accessions: Iterable[str]) -> set[str]:
    """The accessions whose newest stored draft is not to be posted (``ConsistencyCheck.withheld``: the route's
    policy withheld it, or it is degenerate and no sample nor retrieval draft could stand in: README "Consistency
    check"). Such a study is settled, with its reason in the store, not lost; the suite counts it apart."""
    with store.engine.connect() as conn:
        newest = latest_drafts(conn, list(accessions))  # one query, not one per accession (polled while drafting)
    return {a for a, draft in newest.items() if draft.consistency is not None and draft.consistency.withheld}


def tally(row: str, sent: Sequence[Sent], received: Sequence[bytes], store: Store, recovery: str = "") -> Tally:
    """Duplicates: drafts beyond one per accession (each study here has one report version), unless the later one
    names an earlier received draft it replaces; the same MSH-10 received twice is a duplicate too. Lost: ACKed
    preliminaries with no draft at the RIS and none withheld by the consistency policy in the store, ACKed finals not
    captured in the store (per accession). Withheld: those preliminaries whose stored draft was withheld."""
    drafts = [Received.of(m) for m in received]
    drafts = [d for d in drafts if d.status != "W"]  # a withdrawal is not a draft (none is sent here)
    seen: dict[str, set[str]] = {}
    out = Tally(row, reports_in=len(sent), acked=sum(s.acked for s in sent), recovery=recovery)
    for draft in drafts:
        ids = seen.setdefault(draft.accession, set())
        if draft.control_id in ids or (ids and draft.replaces not in ids):
            out.duplicates += 1
            out.duplicate_ids.append(f"{draft.accession}:{draft.control_id}")
        elif ids:
            out.replaced += 1
        ids.add(draft.control_id)
    out.drafts_posted = len(seen)
    missing = {s.accession for s in sent if s.acked and s.kind == "prelim"} - set(seen)
    out.withheld_ids = sorted(withheld_by_policy(store, missing))
    out.withheld = len(out.withheld_ids)
    for accession in sorted(missing - set(out.withheld_ids)):
        out.lost_ids.append(f"{accession} (no draft)")
    for accession in sorted({s.accession for s in sent if s.acked and s.kind == "final"}):
        if not store.signed_records(accession):
            out.lost_ids.append(f"{accession} (final not captured)")
    out.lost = len(out.lost_ids)
    return out
