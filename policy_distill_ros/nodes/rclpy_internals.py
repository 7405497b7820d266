"""Everything here depends on rclpy internals (not its public API), kept in one module so an
rclpy upgrade breaks one place, and test/test_rclpy_internals.py pins the behaviour it relies on:

- `LoopServed`: a callback group the executor skips (rclpy's Executor asks `can_execute` and
  `beginning_execution` of a group before it waits on or runs an entity);
- `TakeLoop`: `rclpy.impl.implementation_singleton.rclpy_implementation.WaitSet` and the
  subscription handle's `take_message` (what `rclpy.wait_for_message` uses);
- `HotPathLog`: `rclpy_implementation.rclpy_logging_rcutils_log`.

Each falls back to the public API where the binding differs; the pinning test fails first.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence

from rclpy.callback_groups import CallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from policy_distill_ros.core.contract import s_to_ns
from policy_distill_ros.core.log_throttle import LogThrottle


class HotPathLog:
    """A node logger for threads with a deadline: `.error(text)`, `.warning(text)`, `.info(text)`.

    rclpy's logger methods resolve their caller first (inspect.getframeinfo: source file stats
    and reads), measured at 3.5 ms per line on the 2-core dev machine under load; this hands the
    line straight to rcutils (console, /rosout) in ~20 us, with the node's logger name and
    level. Where that binding differs, the public methods are used.
    """

    def __init__(self, logger) -> None:
        from rclpy.logging import LoggingSeverity
        self._logger = logger
        self._severity = LoggingSeverity
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
            self._emit = _rclpy.rclpy_logging_rcutils_log
        except (ImportError, AttributeError):
            self._emit = None

    def _log(self, severity, text: str) -> bool:
        emit = self._emit
        if emit is None:
            return False
        try:
            if self._logger.is_enabled_for(severity):
                emit(severity, self._logger.name, text, "hot_path", __file__, 0)
            return True
        except (TypeError, AttributeError, ValueError):
            self._emit = None
            return False

    def error(self, text: str) -> None:
        if not self._log(self._severity.ERROR, text):
            self._logger.error(text)

    def warning(self, text: str) -> None:
        if not self._log(self._severity.WARN, text):
            self._logger.warning(text)

    def info(self, text: str) -> None:
        if not self._log(self._severity.INFO, text):
            self._logger.info(text)


class LoopServed(CallbackGroup):
    """The callback group of entities a `TakeLoop` serves on a node that an executor also spins:
    the executor leaves them out of its wait set and never runs them (`can_execute` False), so
    they can live on the node users address (`ros2 node info` lists them) at no cost to it.
    `executor_serves()` hands them back to the node's executor (no wait-set binding)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_serves = True

    def executor_serves(self) -> None:
        self.loop_serves = False

    def can_execute(self, entity) -> bool:
        return not self.loop_serves

    def beginning_execution(self, entity) -> bool:
        return not self.loop_serves

    def ending_execution(self, entity) -> None:
        pass


class TakeLoop:
    """Serves a few subscriptions from one dedicated thread: wait, take, call the handler.

    Uses rclpy's wait-set binding directly (as `rclpy.wait_for_message` does) instead of an
    executor, which rebuilds its wait set in Python over every entity on each wake-up. The
    handlers are the subscriptions' own callbacks, so where the binding differs the loop falls
    back to a SingleThreadedExecutor over `node` with identical behaviour. Subscriptions are
    served in the given order when several are ready at once.

    `group`: the subscriptions belong to a node spun by another executor (see `LoopServed`);
    without the binding that executor then serves them itself and this loop starts no thread.

    `periodic=(period_s, callback)`: also call `callback()` on this thread every period_s
    (monotonic, missed periods skipped), always after taking every message that has arrived,
    so a watchdog never reports a silence while the messages that end it wait unread.

    `passive`: subscriptions that never wake the thread: what they hold is taken (everything
    queued, in order) just before the woken-for messages are handled, or by `take_passive()`
    from another thread. A sensor frame (imu, then joint_states) thus costs one wake-up when
    only its last topic is waited on; the rmw receive time in each message's info keeps the
    age of a passively taken message exact.
    """

    WAIT_TIMEOUT_NS = 100_000_000

    def __init__(self, node: Node, subscriptions: Sequence, name: str,
                 periodic: tuple[float, Callable[[], None]] | None = None,
                 group: LoopServed | None = None, passive: Sequence = ()) -> None:
        self.node = node
        self.subscriptions = list(subscriptions)
        self.passive = list(passive)
        self._passive_lock = threading.Lock()
        self._periodic = periodic
        if periodic is not None and not periodic[0] > 0:
            raise ValueError(f"TakeLoop periodic period must be > 0 s, got {periodic[0]!r}")
        self._stop = threading.Event()
        self._error_log = LogThrottle()
        self._log = HotPathLog(node.get_logger())
        self._executor: SingleThreadedExecutor | None = None
        self._wake = None
        target = None
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
            self._wait_set = _rclpy.WaitSet(len(self.subscriptions), 1, 0, 0, 0, 0,
                                            node.context.handle)
            self._wake = node.create_guard_condition(lambda: None, callback_group=group)
            self._passive_served = [_Served(sub) for sub in self.passive]
            target = self._wait_loop
        except (ImportError, AttributeError, TypeError):
            self._passive_served = None  # the executor serves them like the others
            if group is not None:
                group.executor_serves()
                if periodic is not None:
                    node.create_timer(periodic[0], periodic[1], callback_group=group)
            else:
                self._executor = SingleThreadedExecutor(context=node.context)
                self._executor.add_node(node)
                if periodic is not None:
                    node.create_timer(periodic[0], periodic[1])
                target = self._executor_loop
        self._name = name
        self._thread = None if target is None else threading.Thread(target=target, daemon=True,
                                                                    name=name)

    def start(self) -> TakeLoop:
        if self._thread is not None:
            self._thread.start()
        return self

    def _wait_loop(self) -> None:
        subs, wait_set, stop = self.subscriptions, self._wait_set, self._stop
        served = [_Served(sub) for sub in subs]
        wake_handle = self._wake.handle
        period_s, periodic = self._periodic if self._periodic is not None else (None, None)
        next_due = time.monotonic() + period_s if period_s else math.inf
        timeout_ns = self.WAIT_TIMEOUT_NS
        call = self._call
        try:
            with contextlib.ExitStack() as stack:  # handles stay valid while we wait on them
                for sub in subs:
                    stack.enter_context(sub.handle)
                stack.enter_context(wake_handle)
                while not stop.is_set():
                    wait_set.clear_entities()
                    for entry in served:
                        wait_set.add_subscription(entry.handle)
                    wait_set.add_guard_condition(wake_handle)
                    if period_s:
                        timeout_ns = max(0, s_to_ns(next_due - time.monotonic()))
                    wait_set.wait(timeout_ns)
                    ready = wait_set.get_ready_entities("subscription")
                    if ready and self._passive_served:
                        self.take_passive()
                    for entry in served:
                        if entry.pointer in ready:
                            handle, msg_type, raw, callback = entry.take_args
                            taken = handle.take_message(msg_type, raw)
                            while taken is not None:  # everything queued, in order
                                if entry.with_info:  # (msg, rmw message info)
                                    call(callback, taken[0], taken[1])
                                else:
                                    call(callback, taken[0])
                                taken = handle.take_message(msg_type, raw) if period_s else None
                    if period_s:
                        now = time.monotonic()
                        if now >= next_due:
                            call(periodic)
                            next_due += period_s
                            if next_due <= now:  # overran: skip, never burst
                                next_due = now + period_s
        except Exception:
            if not stop.is_set():
                raise

    def take_passive(self) -> None:
        """Take and handle everything the passive subscriptions hold (any thread; no-op where
        the executor serves them)."""
        passive = self._passive_served
        if not passive:
            return
        with self._passive_lock:
            for entry in passive:
                handle, msg_type, raw, callback = entry.take_args
                with handle:  # valid while taken from, whichever thread this is
                    taken = handle.take_message(msg_type, raw)
                    while taken is not None:
                        if entry.with_info:
                            self._call(callback, taken[0], taken[1])
                        else:
                            self._call(callback, taken[0])
                        taken = handle.take_message(msg_type, raw)

    def _call(self, callback: Callable, *args) -> None:
        """A handler's exception is logged (at most once a second), never ends the loop."""
        try:
            callback(*args)
        except Exception as exc:  # noqa: BLE001 - the hot path must outlive any bug
            if self._error_log.due():
                self._log.error(f"{self._name}: {exc!r}")

    def _executor_loop(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us: nothing left to serve
            pass

    def close(self) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
        elif self._wake is not None:
            self._wake.trigger()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if self._wake is not None and self._executor is None:
            self.node.destroy_guard_condition(self._wake)
            self._wake = None


class _Served:
    """A subscription's handle, pointer and take arguments, read once (rclpy properties)."""

    __slots__ = ("handle", "pointer", "take_args", "with_info")

    def __init__(self, sub) -> None:
        self.handle = sub.handle
        self.pointer = sub.handle.pointer
        self.take_args = (sub.handle, sub.msg_type, sub.raw, sub.callback)
        self.with_info = _takes_message_info(sub.callback)


def _takes_message_info(callback: Callable) -> bool:
    """A callback written `(msg, info=None)` gets the rmw message info (source_timestamp, ...)
    from a TakeLoop; rclpy's executor calls it with the message alone."""
    import inspect
    try:
        inspect.signature(callback).bind(object(), object())
        return True
    except (TypeError, ValueError):
        return False
