"""The connector contract: every system Lethe reaches implements this one class.

A connector is found through the entry-point group ``lethe.connectors`` and enabled only
when ``systems.toml`` names it.  Its entry-point name, the ``connector =`` value in the
configuration and the class attribute ``name`` are the same string.

Nothing here succeeds by default: a verb that a connector does not implement raises, and
a connector that cannot reach a row raises :class:`ConnectorError` instead of reporting
the row as erased.  Connectors never import Flask, ``portal`` or ``admin``.
"""

from __future__ import annotations

import abc
import datetime
import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


class Outcome(enum.StrEnum):
    """What happened to the subject in one system."""

    COMPLETED = "completed"
    NOT_FOUND = "not_found"
    RETAINED = "retained"
    ACTION_REQUIRED = "action_required"
    FAILED = "failed"


class Action(enum.StrEnum):
    """What a plan does to the rows of one table (or records of one kind)."""

    DELETE = "delete"
    ANONYMISE = "anonymise"
    RETAIN = "retain"


class ConfigError(ValueError):
    """A system's configuration is wrong; the message names the system and the key."""

    def __init__(self, system: str, key: str, problem: str, file: str | None = None):
        self.system, self.key, self.problem, self.file = system, key, problem, file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}system {system!r}, key {key!r}: {problem}")


class ConnectorError(RuntimeError):
    """A verb could not be carried out; the message says what a person can do about it.

    ``transient`` marks failures worth retrying (connection refused, timeout, deadlock).
    """

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Subject:
    """The person a request is about, as the connectors see them."""

    email: str
    customer_id: str | None = None
    #: Keyed hash of the normalised email, for systems that store only that.
    email_hash: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """Whether a system is reachable and the configured access is sufficient."""

    ok: bool
    message: str


@dataclass
class TablePlan:
    """One step of a plan: what will be done to the matching rows of one table."""

    table: str
    action: Action
    rows: int
    #: How the rows are reached, e.g. ``customers.email`` or ``orders.customer_id -> customers.id``.
    via: str = ""
    #: For ``anonymise``: column -> method (``null``, ``fixed``, ``pseudonym``, ...).
    columns: dict[str, str] = field(default_factory=dict)
    #: For ``retain`` (and anonymise that keeps a row): the legal ground, e.g. ``art17-3-b``.
    ground: str | None = None
    note: str = ""


@dataclass
class Plan:
    """A dry run: everything a system holds about a subject and what erasure would do."""

    system: str
    connector: str
    steps: list[TablePlan] = field(default_factory=list)
    #: Things a person must look at: unconfigured tables that reference the subject, ...
    warnings: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Return the number of rows the plan touches or keeps."""
        return sum(step.rows for step in self.steps)

    @property
    def found(self) -> bool:
        """Return whether the system holds anything about the subject."""
        return self.total_rows > 0

    def erase_outcome(self) -> Outcome:
        """Return what carrying out this plan amounts to: nothing found, all kept, or done."""
        if not self.found:
            return Outcome.NOT_FOUND
        if all(step.action == Action.RETAIN for step in self.steps if step.rows):
            return Outcome.RETAINED
        return Outcome.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data, to be stored and shown."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Rebuild a plan stored with :meth:`to_dict`."""
        steps = [TablePlan(**{**step, "action": Action(step["action"])}) for step in data["steps"]]
        return cls(
            system=data["system"],
            connector=data["connector"],
            steps=steps,
            warnings=list(data.get("warnings", [])),
        )


@dataclass
class EraseResult:
    """What an erasure did, per table, in one system."""

    outcome: Outcome
    #: table -> rows deleted or anonymised (retained tables are not listed).
    rows_affected: dict[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def total_rows(self) -> int:
        """Return the number of rows changed."""
        return sum(self.rows_affected.values())


@dataclass
class VerifyResult:
    """A re-scan after erasure: what still matches the subject, per table."""

    remaining: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Return whether nothing that should be gone still matches."""
        return not any(self.remaining.values())


#: The kinds of parameter a segment may take, and what staff enter for each.
SEGMENT_PARAMETERS = {"before": "a date: the people whose date is before it"}


@dataclass(frozen=True)
class SegmentInfo:
    """A group of people a system can list, e.g. customers inactive since a date."""

    name: str
    label: str
    #: A key of :data:`SEGMENT_PARAMETERS`, or None when the segment takes no parameter.
    parameter: str | None = None


@dataclass(frozen=True)
class Record:
    """One exported record: where it came from and its fields."""

    table: str
    data: dict[str, Any]


class Connector(abc.ABC):
    """Base class of every connector; subclasses implement each verb or raise."""

    #: Entry-point name and ``connector =`` value in ``systems.toml``.
    name: ClassVar[str]
    #: Version recorded in proofs of deletion.
    version: ClassVar[str] = "0"
    #: For a system that confirms erasure later by calling Lethe back: how long it may take
    #: (set from the settings in ``__init__``).  None: ``erase`` finishes the job itself.
    #: A run left ``action_required`` past it is failed by Lethe's hourly job.
    callback_timeout: datetime.timedelta | None = None
    #: Set by core just before ``erase`` when :attr:`callback_timeout` is set: the signed
    #: URL, bound to this run and attempt, that the system POSTs its outcome to
    #: (``{"status": "done" | "failed", ...}``).  ``erase`` hands it to the system and
    #: returns ``action_required``.  The connector never builds it: it needs the app.
    callback_url: str | None = None

    def __init__(self, system: str, settings: Mapping[str, Any]):
        """Validate ``settings`` for ``system``; raise :class:`ConfigError` if wrong."""
        self.system = system
        self.settings = dict(settings)

    @abc.abstractmethod
    def check(self) -> CheckResult:
        """Return whether the system is reachable with sufficient permissions."""

    @abc.abstractmethod
    def plan(self, subject: Subject) -> Plan:
        """Return a dry run of what erasure would do; change nothing."""

    @abc.abstractmethod
    def export(self, subject: Subject) -> Iterator[Record]:
        """Yield every record the system holds about the subject, streamed."""

    @abc.abstractmethod
    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        """Carry out exactly ``plan``; running it twice changes nothing more."""

    @abc.abstractmethod
    def verify(self, subject: Subject) -> VerifyResult:
        """Re-scan the system and return what still matches the subject."""

    #: True when :meth:`erase_many` erases a batch of people together (set-based, in one
    #: transaction).  Bulk erasure then hands this system's runs to it a batch at a time;
    #: otherwise each person's run goes through :meth:`erase` on its own.
    batch_erase: ClassVar[bool] = False

    def plan_many(self, subjects: Sequence[Subject]) -> list[Plan]:
        """Return :meth:`plan` for each subject, in the same order; change nothing."""
        return [self.plan(subject) for subject in subjects]

    def erase_many(self, work: Sequence[tuple[Subject, Plan]]) -> list[EraseResult]:
        """Carry out each ``(subject, plan)``; return one result per item, in order.

        When it raises, any of the people may or may not have been erased: the caller
        erases them again one by one, which :meth:`erase` makes safe (running it twice
        changes nothing more).  It never returns a result for a person it did not erase.
        """
        return [self.erase(subject, plan) for subject, plan in work]

    def verify_many(self, subjects: Sequence[Subject]) -> list[VerifyResult]:
        """Return :meth:`verify` for each subject, in the same order."""
        return [self.verify(subject) for subject in subjects]

    def stop_marketing(self, subject: Subject) -> EraseResult:
        """Stop using the subject's data for direct marketing (GDPR Art. 21(3)).

        Returns ``completed`` with the records changed, or ``not_found`` when the system
        holds nothing about the subject or its configuration declares no marketing use.
        A connector that cannot do it raises, so the request shows the system as failed
        and a person acts; it never reports marketing stopped when it was not.
        """
        raise ConnectorError(
            f"{self.system}: the {self.name} connector cannot stop marketing use by itself; "
            "stop it by hand in that system"
        )

    def segments(self) -> list[SegmentInfo]:
        """Return the groups of people this system can list; the default lists none."""
        return []

    def list_segment(self, name: str, params: Mapping[str, Any]) -> Iterator[Subject]:
        """Yield every person in segment ``name``, streamed, never all of them at once.

        ``params`` holds the segment's parameter under its kind, e.g. ``{"before": date}``.
        People already erased (placeholders) are not listed.  A connector without segments
        raises: an empty list would read as "nobody".
        """
        raise ConnectorError(f"{self.system}: the {self.name} connector cannot list segments")

    def close(self) -> None:
        """Release connections; the default holds none."""
        return None
