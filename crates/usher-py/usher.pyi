"""Check out floating license seats from an usher license server.

    import usher

    with usher.checkout("cad", "2025", count=1, wait=300) as lic:
        ...  # the licensed work; lic.lost turns true if the seat is taken away

Every call that waits on the server releases the GIL, and Ctrl-C interrupts it
(a queued checkout is then withdrawn). Errors are subclasses of UsherError, whose
``code`` is the C library's status code for the same failure.
"""

from os import PathLike
from types import TracebackType
from typing import Iterable, List, Optional, Type, TypedDict, Union

__version__: str

_Path = Union[str, "PathLike[str]"]

class UsherError(Exception):
    """Base of every usher error."""

    code: int
    """The C ABI's status code (negative; see docs/c-api.md)."""
    detail: str
    """One line for a human."""
    retryable: bool
    """Whether trying the same call again later may succeed."""

class InvalidArgument(UsherError):
    """A bad argument, server list or vendor key."""

class ServerUnreachable(UsherError):
    """No license server could be reached, or it did not answer in time."""

class ServerError(UsherError):
    """The server answered with an error, or with something this client cannot read."""

class ClientClosed(UsherError):
    """The client (or the license) has been closed."""

class GrantUntrusted(UsherError):
    """The grant did not verify against the vendor keys; no seat is held."""

class LicenseUnavailable(UsherError):
    """The checkout was refused."""

class NoSuchFeature(LicenseUnavailable):
    """No license names the feature (or none at the version asked for)."""

class LicenseExpired(LicenseUnavailable):
    """The licenses for the feature have expired, or have not started yet."""

class AllInUse(LicenseUnavailable):
    """Every seat is in use (or others are queued ahead) and the checkout did not wait."""

class WaitTimedOut(LicenseUnavailable):
    """The checkout waited in the queue for as long as it allowed."""

class PolicyDenied(LicenseUnavailable):
    """The server's policy refused the checkout."""

class LicenseLost(UsherError):
    """The license was lost: an administrator removed it, or the session expired."""

class FeatureStatus(TypedDict):
    feature: str
    vendor: str
    version: str
    total: int
    in_use: int
    expires: Optional[float]
    """Seconds since the epoch; None: permanent."""

class License:
    """Seats held; ``checkin()`` or the end of a ``with`` block gives them back."""

    @property
    def lease_id(self) -> int:
        """The lease handle, as administrators see it."""
    @property
    def feature(self) -> str: ...
    @property
    def version(self) -> str:
        """The version of the pool the seats came from."""
    @property
    def vendor(self) -> str: ...
    @property
    def count(self) -> int:
        """Seats held."""
    @property
    def expires(self) -> Optional[float]:
        """When the entitlement expires (seconds since the epoch); None: permanent."""
    @property
    def overdraft(self) -> bool:
        """Whether the seats were granted beyond the licensed count."""
    @property
    def statement(self) -> Optional[str]:
        """The server-signed statement of the grant, when it was verified with vendor keys."""
    @property
    def lost(self) -> bool:
        """Whether the seats were lost while held."""
    @property
    def lost_reason(self) -> Optional[str]:
        """Why the seats were lost, or None."""
    @property
    def status(self) -> str:
        """"granted", "lost" or "checked_in"; never waits."""
    def check(self) -> None:
        """Raises LicenseLost if the seats were lost, ClientClosed if checked in."""
    def wait_lost(self, timeout: Optional[float] = None) -> Optional[str]:
        """Waits until the seats are lost and returns why; None after timeout or at checkin."""
    def checkin(self) -> None:
        """Gives the seats back and waits until the server has them. Idempotent."""
    def __enter__(self) -> "License": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Client:
    """A connection (with its session) to a license server."""

    def __init__(
        self,
        servers: Optional[str] = None,
        *,
        vendor_keys: Iterable[_Path] = (),
        connect_timeout: float = 3.0,
        request_timeout: float = 30.0,
    ) -> None:
        """Connects at once. servers: "port@host,..." (None: USHER_LICENSE, else discovery)."""
    def checkout(
        self,
        feature: str,
        version: str = "",
        count: int = 1,
        wait: Optional[float] = 0,
    ) -> License:
        """Checks out seats. wait: 0 fails at once if none is free, N queues up to N
        seconds, None queues as long as it takes."""
    def status(self, feature: str = "") -> List[FeatureStatus]:
        """Usage per pool, as much as the server shows to anyone."""
    @property
    def server(self) -> str:
        """The server that answered, as host:port."""
    @property
    def server_version(self) -> str: ...
    def close(self) -> None:
        """Ends the session, releasing every seat it holds. Idempotent."""
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def checkout(
    feature: str,
    version: str = "",
    count: int = 1,
    wait: Optional[float] = 0,
    *,
    servers: Optional[str] = None,
    vendor_keys: Iterable[_Path] = (),
) -> License:
    """Connects, checks out and returns a License that owns the connection."""
