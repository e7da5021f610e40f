"""Pipes: three machines kept in step by ``trio_am.pipes``.

Run it with ``python examples/pipes_demo.py``.

A ``sensor`` feeds a ``controller``, which feeds a ``dashboard``::

    sensor                       controller                dashboard
    Ready   --bind_ready------>  SensorReady  --bind-->    SensorOnline
    Reading --pipe_add-------->  Sample (args travel)
    Hot     --bind------------>  Cooling      --bind-->    FanOn
                                 Cooling      --NOT--->    Quiet
    Exception --bind_err------>  ErrSensor    --pipe_add-> Alarm

What it teaches:

* A pipe is a *final handler* on the source machine that mutates the target. It runs
  synchronously when the target is idle (the target queues it when it is busy), so one
  ``sensor.add1("Hot")`` reaches the dashboard, two hops away, before it returns. Pipes
  need no nursery.
* ``bind`` mirrors a state both ways (on and off), with a new name on the target
  (``target_on``); ``bind_ready`` is ``bind`` for ``Ready``; ``pipe_add`` only adds, and
  passes the args on; ``bind_err`` passes the error on (``add_err_state`` on the target).
* A *negated* pipe ("pipe-not"): ``Quiet`` on the dashboard is on exactly while
  ``Cooling`` is off. trio_am has no ready-made function for it; ``bind_not`` below
  builds it from ``bind_handler_maps``, the way the pipes module builds its own.
* Each piped mutation carries the source event, so the target knows where a change came
  from (``e.mutation.source.mach_id``).
* Stopping: every pipe returns a ``PipeBinding`` (``detach()``, ``ids``, ``a | b``).
  Disposing a machine unbinds all of its handlers, so the pipes *out of* it stop on
  their own; the pipes *into* it live on the other machine and are detached here from
  ``controller.on_dispose``.

The machines print their own change logs (``set_logger`` at ``LogLevel.CHANGES``); the
indented lines come from handlers. Nothing here waits, so the output never varies.
"""

from __future__ import annotations

import trio

import trio_am as am
from trio_am import pipes

SENSOR_SCHEMA = {
    "Start": am.State(),
    "Ready": am.State(require=["Start"]),
    "Reading": am.State(multi=True, require=["Ready"]),  # one activation per sample
    "Hot": am.State(require=["Ready"]),
}
CONTROLLER_SCHEMA = {
    "SensorReady": am.State(),
    "Sample": am.State(multi=True),
    "Cooling": am.State(),
    "ErrSensor": am.State(require=["Exception"]),  # an error state: needs Exception
}
DASHBOARD_SCHEMA = {
    "SensorOnline": am.State(),
    "FanOn": am.State(),
    "Quiet": am.State(),
    "Alarm": am.State(),
}


def bind_not(
    source: am.Machine, target: am.Machine, state: str, target_state: str
) -> pipes.PipeBinding:
    """A negated pipe: ``state`` activating in ``source`` removes ``target_state`` from
    ``target``, and ``state`` ending adds it back. Sets the current value first."""
    source.parse_states([state])  # unknown names raise am.StateUnknownError now
    target.parse_states([target_state])
    if not source.is1(state):
        target.add1(target_state)
    bid = source.bind_handler_maps(
        final={
            # final handlers of the source; event=e records the source in the target's
            # transition (e.mutation.source on the target)
            f"{state}_state": lambda e: target.remove1(target_state, event=e),
            f"{state}_end": lambda e: target.add1(target_state, event=e),
        },
        id=f"pipe:not:{state}>{target.id}:{target_state}",
    )
    return pipes.PipeBinding(source, [bid])


def origin(e: am.Event) -> str:
    """The id of the machine whose transition caused this one ("-" for a direct call)."""
    source = e.mutation.source  # an am.MutSource when another machine mutated this one
    return source.mach_id if source is not None else "-"


class Controller:
    """Handlers of the controller."""

    def Sample_state(self, e: am.Event) -> None:
        print(f"    controller: sample {e.args['temp']} C, from {origin(e)}")


class Dashboard:
    """Handlers of the dashboard."""

    def Alarm_state(self, e: am.Event) -> None:
        print(f"    dashboard: ALARM {e.args['err']!r}, from {origin(e)}")


def log_changes(level: int, text: str, mach: am.Engine) -> None:
    """Log sink: the machine's own change lines (``[state] +Added -Removed``)."""
    print(f"  [{mach.id:10}] {text}")


def show(*machines: am.Machine) -> None:
    for mach in machines:
        print(f"  {mach.id:10} {mach}")


async def main() -> None:
    async with (
        am.open_machine(SENSOR_SCHEMA, id="sensor") as sensor,
        am.open_machine(DASHBOARD_SCHEMA, id="dashboard", handlers=Dashboard()) as dashboard,
    ):
        # The controller lives in an inner block: it is disposed before the others.
        async with am.open_machine(
            CONTROLLER_SCHEMA, id="controller", handlers=Controller()
        ) as controller:
            for mach in (sensor, controller, dashboard):
                mach.set_logger(log_changes)
                mach.set_log_level(am.LogLevel.CHANGES)
                mach.set_log_args(am.log_args_mapper(names=["temp"]))  # show temp=...

            print("# wiring the pipes")
            # sensor -> controller; `|` collects the bindings into one
            into_controller = (
                pipes.bind_ready(sensor, controller, target_state="SensorReady")
                | pipes.pipe_add(sensor, controller, "Reading", "Sample")
                | pipes.bind(sensor, controller, "Hot", target_on="Cooling")
                | pipes.bind_err(sensor, controller, "ErrSensor")
            )
            # controller -> dashboard
            pipes.bind(controller, dashboard, "SensorReady", target_on="SensorOnline")
            pipes.bind(controller, dashboard, "Cooling", target_on="FanOn")
            bind_not(controller, dashboard, "Cooling", "Quiet")  # Cooling is off: adds Quiet
            pipes.pipe_add(controller, dashboard, "ErrSensor", "Alarm")

            print("\n# 1. bind_ready with a rename: Ready -> SensorReady -> SensorOnline")
            sensor.add(["Start", "Ready"])
            show(sensor, controller, dashboard)

            print("\n# 2. pipe_add: every Reading is a Sample on the controller, args included")
            sensor.add1("Reading", {"temp": 24.5})
            sensor.add1("Reading", {"temp": 31.0})
            print(
                f"  Reading tick {sensor.tick('Reading')}, Sample tick {controller.tick('Sample')}"
            )

            print("\n# 3. bind + pipe-not: Hot -> Cooling -> FanOn, and NOT Cooling -> Quiet")
            sensor.add1("Hot")  # returns after both hops ran
            show(dashboard)
            sensor.remove1("Hot")
            show(dashboard)

            print("\n# 4. errors: bind_err, then pipe_add of the error state")
            sensor.add_err(OSError("probe disconnected"))
            show(sensor, controller, dashboard)
            print(f"  controller.err: {controller.err!r}")

            print("\n# 5. disposal stops the pipes")
            # Pipes into the controller are handlers on the sensor: detach them when the
            # controller goes (otherwise they would keep mutating a disposed machine,
            # which is harmless, since it returns CANCELED, but useless).
            controller.on_dispose(lambda machine_id: into_controller.detach())
            print(f"  sensor's handler bindings: {len(sensor.handler_ids())}")
            for bid in sensor.handler_ids():
                print(f"    {bid}")
            print("  leaving the controller's block...")
        print(f"  controller disposed: {controller.disposed}")
        print(f"  sensor's handler bindings: {sensor.handler_ids()}")
        sensor.add1("Hot")  # nothing is piped any more: only the sensor changes
        show(sensor, dashboard)
        # The dashboard keeps the last values it was sent (SensorOnline is still on): a
        # disposal runs no end handlers, so it is not piped. To react to it, pipe a
        # Disposing state (added when an open_machine block ends) or use on_dispose.


if __name__ == "__main__":
    trio.run(main)
