# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the lambda_reserved_concurrency module: whether a reservation fits the account.

No AWS here: the module reads the account's settings and the function's reservation, and this
decides from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Lambda refuses a reservation that leaves fewer unreserved concurrent executions in the account
# than this ("decreases account's UnreservedConcurrentExecution below its minimum value of [100]").
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
MINIMUM_UNRESERVED_CONCURRENCY = 100
# What PutFunctionConcurrency's refusal names, to recognise it when the settings were unreadable.
BELOW_MINIMUM_REFUSAL = "UnreservedConcurrentExecution"


@dataclass(frozen=True)
class AccountConcurrency:
    """AccountLimit of Lambda's GetAccountSettings."""

    concurrent_executions: int
    unreserved_concurrent_executions: int

    @classmethod
    def from_account_settings(cls, settings: dict[str, Any]) -> AccountConcurrency:
        limit = settings["AccountLimit"]
        return cls(
            concurrent_executions=int(limit["ConcurrentExecutions"]),
            unreserved_concurrent_executions=int(limit["UnreservedConcurrentExecutions"]),
        )

    def unreserved_after(self, current: int | None, wanted: int | None) -> int:
        """The account's unreserved pool once the function holds ``wanted`` instead of
        ``current`` (None: no reservation)."""
        return self.unreserved_concurrent_executions + (current or 0) - (wanted or 0)


@dataclass(frozen=True)
class ReservationPlan:
    """What to do: ``put``, ``delete``, ``none`` (already so) or ``skip`` (the account is too
    small for the reservation; ``skipped_reason`` says why)."""

    action: str
    skipped_reason: str | None = None


def skipped_reason(function_name: str, wanted: int, detail: str) -> str:
    """The warning of a skipped reservation: why, and why the platform still runs correctly."""
    return (
        f"Reserved concurrency {wanted} for {function_name} not set: {detail}, and AWS keeps at "
        f"least {MINIMUM_UNRESERVED_CONCURRENCY} unreserved. Runs are still serialised: the ETL "
        "takes the warehouse's advisory run lock, so a second run (or a backfill) waits or skips "
        "instead of loading at the same time. Ask AWS for a higher Lambda 'Concurrent "
        "executions' quota to reserve."
    )


def plan_reservation(
    function_name: str,
    current: int | None,
    wanted: int | None,
    account: AccountConcurrency | None,
) -> ReservationPlan:
    """Decide from the function's reservation and the account's settings (None when unread:
    then only PutFunctionConcurrency's answer can tell)."""
    if current == wanted:
        return ReservationPlan("none")
    if wanted is None:
        return ReservationPlan("delete")
    if account is not None:
        remaining = account.unreserved_after(current, wanted)
        if remaining < MINIMUM_UNRESERVED_CONCURRENCY:
            return ReservationPlan(
                "skip",
                skipped_reason(
                    function_name,
                    wanted,
                    f"the account's concurrency limit is {account.concurrent_executions}, so "
                    f"only {remaining} unreserved executions would remain",
                ),
            )
    return ReservationPlan("put")
