"""The crash-safe order path: a strategy's action -> Order -> broker -> Order + Position.

Order of writes, so a crash anywhere loses nothing and doubles nothing:

1. the INTENT (an Order in state ``new`` under a deterministic ``client_order_id``)
   is committed before the broker hears of it;
2. the broker is called with that id (exchanges treat a known client id as the same
   order, so a retry never places a second one);
3. the broker's answer moves the Order (submitted, partially filled, filled, ...)
   and the Position in ONE transaction. The Position moves by the difference between
   the broker's filled quantity and the Order's ``filled_quantity``, so applying the
   same answer twice moves it once.

A crash between 2 and 3 leaves the Order in ``new``; ``reconcile`` (or running the
same intent again) asks the broker by client order id and finishes step 3.
Every call into broker code goes through ``safe_call`` with the service's audit hook:
an exception becomes an error result, audited.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.contracts import BrokerContract
from corec_tasks.errors import CorecError
from corec_tasks.plugin_base import AuditHook, is_error, safe_call
from plugins.broker import paper
from plugins.trading.models import (
    Asset,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Portfolio,
    Position,
    PositionSide,
)
from plugins.trading.types import to_money, utcnow

log = logging.getLogger(__name__)

#: Order states a crash can leave behind; reconcile asks the broker about these.
OPEN_STATES = (OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)

_EXCHANGE_TO_ORDER = {
    paper.OPEN: OrderStatus.SUBMITTED,
    paper.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    paper.FILLED: OrderStatus.FILLED,
    paper.CANCELLED: OrderStatus.CANCELLED,
    paper.REJECTED: OrderStatus.REJECTED,
}


#: The one broker interface is the framework's broker contract (exchange-level:
#: ``submit_order``/``fetch_order`` by client order id); this is its old name here.
Broker = BrokerContract


class ActionError(CorecError, ValueError):
    """The strategy's action dict is malformed."""


def client_order_id(portfolio_id: int, asset_id: int, cycle: object) -> str:
    """The deterministic id of one intent: the same (portfolio, asset, cycle), the same id."""
    cid = f"corec-{portfolio_id}-{asset_id}-{cycle}"
    if len(cid) <= 64:  # the column's width
        return cid
    return "corec-" + hashlib.sha256(cid.encode()).hexdigest()[:40]


def _amount(value: object, name: str, *, required: bool = False) -> Decimal | None:
    if value is None:
        if required:
            raise ActionError(f"parameters.{name} is required")
        return None
    if isinstance(value, bool):
        raise ActionError(f"parameters.{name} must be a number, got {value!r}")
    try:
        # The seed's strategies speak floats: take their shortest repr, not the binary value.
        amount = to_money(str(value) if isinstance(value, float) else value)
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise ActionError(f"parameters.{name}: {exc}") from None
    if amount <= 0:
        raise ActionError(f"parameters.{name} must be positive, got {amount}")
    return amount


def result(
    *,
    success: bool,
    status: str,
    order: Order | None = None,
    error: str | None = None,
    replayed: bool = False,
) -> dict[str, Any]:
    """The seed's broker result (success, broker_order_id, broker_response, error_message)
    plus the order's status, ids, filled quantity, average price and fee (decimal strings)."""
    response = dict(order.broker_response or {}) if order is not None else {}
    return {
        "success": success,
        "status": status,
        "order_id": order.id if order is not None else None,
        "client_order_id": order.client_order_id if order is not None else None,
        "broker_order_id": order.broker_order_id if order is not None else None,
        "filled_quantity": format(order.filled_quantity or Decimal(0), "f")
        if order is not None
        else "0",
        "average_price": format(order.average_fill_price, "f")
        if order is not None and order.average_fill_price is not None
        else None,
        "fee": response.get("fee", "0"),
        "broker_response": response,
        "error_message": error,
        "replayed": replayed,
    }


def _order_result(order: Order, *, replayed: bool = False) -> dict[str, Any]:
    status = OrderStatus(order.status)
    ok = status not in (OrderStatus.REJECTED, OrderStatus.NEW)
    return result(
        success=ok, status=status.value, order=order, error=order.error_message, replayed=replayed
    )


class BrokerService:
    """Executes strategy actions through ``broker`` and keeps the trading tables in line."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker: BrokerContract,
        audit: AuditHook | None = None,
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        #: Receives every failed broker call (default: an ERROR log line).
        self.audit = audit

    def execute(
        self,
        action: Mapping[str, Any],
        portfolio: Portfolio | int,
        asset: Asset | int,
        price: Decimal | str | int,
        *,
        cycle: object,
    ) -> dict[str, Any]:
        """Run one strategy action (seed 003 §4.3) at market ``price`` for the intent
        ``(portfolio, asset, cycle)``; always a result dict, never an exception."""
        try:
            return self._execute(action, portfolio, asset, price, cycle)
        except ActionError as exc:
            return result(success=False, status="invalid", error=str(exc))
        except Exception as exc:  # a database failure, say: reported, never raised
            log.exception("broker execute failed")
            return result(success=False, status="error", error=f"{type(exc).__name__}: {exc}")

    def _execute(
        self,
        action: Mapping[str, Any],
        portfolio: Portfolio | int,
        asset: Asset | int,
        price: Decimal | str | int,
        cycle: object,
    ) -> dict[str, Any]:
        if not isinstance(action, Mapping):
            raise ActionError(f"an action is a dict, got {type(action).__name__}")
        kind = action.get("action")
        if kind not in ("open", "close", "none"):
            raise ActionError(f"action must be open, close or none, got {kind!r}")
        if kind == "none":
            return result(success=True, status="none")
        params = action.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise ActionError("parameters must be a dict")
        market = _amount(price, "price (market)", required=True)
        assert market is not None
        portfolio_id = portfolio if isinstance(portfolio, int) else portfolio.id
        asset_id = asset if isinstance(asset, int) else asset.id
        cid = client_order_id(portfolio_id, asset_id, cycle)

        with self.sessions() as db:
            symbol = db.get_one(Asset, asset_id).symbol
            found = db.scalars(select(Order).where(Order.client_order_id == cid)).one_or_none()
            if found is None:
                written = self._write_intent(db, kind, params, portfolio_id, asset_id, cid)
                if isinstance(written, dict):
                    return written
                order = written
            elif OrderStatus(found.status) not in OPEN_STATES:
                return _order_result(found, replayed=True)
            else:
                order = found
            db.commit()  # end the read: no transaction stays open across the broker call
            # The intent is committed: from here a crash leaves a ``new`` order to reconcile.
            record: Any
            if OrderStatus(order.status) == OrderStatus.NEW:
                record = safe_call(self.broker, "submit_order", cid, symbol,
                                   OrderSide(order.side).value, OrderType(order.order_type).value,
                                   order.quantity, market, order.price,
                                   audit=self.audit)  # fmt: skip
            else:
                record = safe_call(self.broker, "fetch_order", cid, market, audit=self.audit)
            if is_error(record):
                log.warning("broker %s failed on %s: %s", self.broker.name, cid, record["error"])
                return result(
                    success=False,
                    status="error",
                    order=order,
                    error=f"broker {self.broker.name}: {record['error_type']}: {record['error']}",
                )
            if record is None:
                return result(
                    success=False, status="error", order=order, error="order unknown at broker"
                )
            # Locked and re-read: another worker may have applied this answer meanwhile.
            db.refresh(order, with_for_update=True)
            apply_record(db, order, record)
            db.commit()
            return _order_result(order)

    def _write_intent(
        self,
        db: Session,
        kind: str,
        params: Mapping[str, Any],
        portfolio_id: int,
        asset_id: int,
        cid: str,
    ) -> Order | dict[str, Any]:
        order_type = params.get("order_type", "market")
        if order_type not in ("market", "limit"):
            raise ActionError(f"parameters.order_type must be market or limit, got {order_type!r}")
        limit = _amount(params.get("price"), "price", required=order_type == "limit")
        quantity = _amount(params.get("quantity"), "quantity", required=kind == "open")
        if kind == "open":
            side = params.get("side")
            if side not in ("buy", "sell"):
                raise ActionError(f"parameters.side must be buy or sell, got {side!r}")
        else:
            position = _open_position(db, portfolio_id, asset_id)
            if position is None:
                return result(success=False, status="invalid", error="no open position to close")
            side = "sell" if position.side == PositionSide.LONG else "buy"
            quantity = position.quantity if quantity is None else min(quantity, position.quantity)
        order = Order(
            client_order_id=cid,
            portfolio_id=portfolio_id,
            asset_id=asset_id,
            side=OrderSide(side),
            order_type=OrderType(order_type),
            quantity=quantity,
            price=limit,
            stop_loss=_amount(params.get("stop_loss"), "stop_loss"),
            take_profit=_amount(params.get("take_profit"), "take_profit"),
            status=OrderStatus.NEW,
            filled_quantity=Decimal(0),
        )
        db.add(order)
        try:
            db.commit()
        except IntegrityError:
            # The same intent committed by another worker first: carry on with theirs.
            db.rollback()
            return db.scalars(select(Order).where(Order.client_order_id == cid)).one()
        return order


def _open_position(db: Session, portfolio_id: int, asset_id: int) -> Position | None:
    return db.scalars(
        select(Position)
        .where(
            Position.portfolio_id == portfolio_id,
            Position.asset_id == asset_id,
            Position.closed_at.is_(None),
        )
        .order_by(Position.id)
        .with_for_update()
    ).first()


def apply_record(db: Session, order: Order, record: Mapping[str, Any]) -> None:
    """Bring ``order`` and its Position in line with the broker's ``record`` (no commit).

    Idempotent: only the fill not yet on the Order moves the Position.
    """
    target = _EXCHANGE_TO_ORDER[record["status"]]
    filled = to_money(record.get("filled_quantity") or 0)
    average = record.get("average_price")
    new_avg = None if average is None else to_money(average)
    old_filled = order.filled_quantity or Decimal(0)
    delta = filled - old_filled
    if delta > 0:
        assert new_avg is not None
        old_notional = old_filled * (order.average_fill_price or Decimal(0))
        _apply_fill(db, order, delta, to_money((filled * new_avg - old_notional) / delta))
    _advance(order, target)
    order.filled_quantity = filled
    order.average_fill_price = new_avg
    order.broker_order_id = record.get("exchange_order_id") or order.broker_order_id
    order.broker_response = {k: v for k, v in record.items() if k != "duplicate"}
    order.error_message = record.get("reject_reason")


def _advance(order: Order, target: OrderStatus) -> None:
    current = OrderStatus(order.status)
    if current == target and target != OrderStatus.PARTIALLY_FILLED:
        return
    if current == OrderStatus.NEW and target != OrderStatus.REJECTED:
        order.transition(OrderStatus.SUBMITTED)  # the broker has it: submitted first
        current = OrderStatus.SUBMITTED
    if current != target:
        order.transition(target)


def _apply_fill(db: Session, order: Order, quantity: Decimal, price: Decimal) -> None:
    """Net ``quantity`` at ``price`` into the open position (netting: one per asset)."""
    buy = OrderSide(order.side) == OrderSide.BUY
    position = _open_position(db, order.portfolio_id, order.asset_id)
    if position is not None and (position.side == PositionSide.LONG) != buy:
        closing = min(quantity, position.quantity)
        per_unit = price - position.entry_price
        if position.side == PositionSide.SHORT:
            per_unit = -per_unit
        position.realized_pnl = to_money(position.realized_pnl + per_unit * closing)
        position.quantity = position.quantity - closing
        if position.quantity == 0:
            position.closed_at = utcnow()
        quantity -= closing
        position = None
    if quantity <= 0:
        return
    if position is None:
        db.add(
            Position(
                portfolio_id=order.portfolio_id,
                asset_id=order.asset_id,
                side=PositionSide.LONG if buy else PositionSide.SHORT,
                quantity=quantity,
                entry_price=price,
                stop_loss=order.stop_loss,
                take_profit=order.take_profit,
                realized_pnl=Decimal(0),
            )
        )
        db.flush()
        return
    total = position.quantity + quantity
    position.entry_price = to_money(
        (position.quantity * position.entry_price + quantity * price) / total
    )
    position.quantity = total
    if order.stop_loss is not None:
        position.stop_loss = order.stop_loss
    if order.take_profit is not None:
        position.take_profit = order.take_profit


def reconcile(
    session: Session,
    broker: Broker,
    *,
    min_age: timedelta = timedelta(seconds=60),
    market_prices: Mapping[int, Decimal] | None = None,
    audit: AuditHook | None = None,
) -> list[dict[str, Any]]:
    """Ask ``broker`` about every order left in new/submitted/partially filled for at
    least ``min_age`` and bring Order and Position in line, one commit per order.

    ``min_age`` keeps it off intents another worker is submitting right now; a process
    restarting alone (nothing else in flight) may pass ``timedelta(0)``.
    An order the broker never received (a crash before the submit) is marked rejected,
    so the same intent can be decided again; broker failures are reported and skipped.
    ``market_prices`` (by asset id) lets a simulated broker fill more meanwhile;
    ``audit`` receives each failed broker call (``safe_call``).
    """
    cutoff = utcnow() - min_age
    orders = session.scalars(
        select(Order).where(Order.status.in_(OPEN_STATES)).order_by(Order.id)
    ).all()
    results: list[dict[str, Any]] = []
    for order in orders:
        if order.updated_at is not None and order.updated_at > cutoff:
            continue  # probably in flight in another worker right now
        cid = order.client_order_id
        price = (market_prices or {}).get(order.asset_id)
        record = safe_call(broker, "fetch_order", cid, price, audit=audit)
        if is_error(record):
            log.warning("reconcile: broker %s failed on %s: %s", broker.name, cid, record["error"])
            error = f"broker: {record['error']}"
            results.append(result(success=False, status="error", order=order, error=error))
            continue
        try:
            session.refresh(order, with_for_update=True)
            if OrderStatus(order.status) not in OPEN_STATES:
                session.commit()
                results.append(_order_result(order, replayed=True))
                continue
            if record is None:
                if OrderStatus(order.status) == OrderStatus.NEW:
                    order.transition(OrderStatus.REJECTED)
                    order.error_message = "never reached the broker (reconciled)"
                    session.commit()
                    results.append(_order_result(order))
                else:
                    results.append(
                        result(
                            success=False,
                            status="error",
                            order=order,
                            error="the broker no longer knows this order",
                        )
                    )
                continue
            apply_record(session, order, record)
            session.commit()
            results.append(_order_result(order))
        except Exception as exc:
            session.rollback()
            log.exception("reconcile failed on %s", cid)
            results.append(result(success=False, status="error", order=order, error=str(exc)))
    return results
