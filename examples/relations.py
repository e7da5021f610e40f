"""Relations between states, target resolution and the order of handlers.

Run it with ``python examples/relations.py``.

A chat client. Its schema merges three parts with ``am.schema_merge``:

* ``am.BASIC_SCHEMA``: ``Start``, ``Ready`` (requires ``Start``), ``Exception``, ...;
* ``trio_am.schemas.CONNECTED_SCHEMA``: ``Connecting``, ``Connected``,
  ``Disconnecting``, ``Disconnected``; each removes the whole group, and a state never
  removes itself, so at most one of them is active (a *self-excluding group*);
  ``Disconnected`` is an *auto* state;
* the chat's own states below.

The relations:

* ``require``: a state can be active only while all its required states are;
* ``add``: activating a state also activates these (best effort, never a reason to fail);
* ``remove``: while a state is active (or being activated), these cannot be;
* ``after``: only ordering: the state's handlers run after those of the listed states;
* ``auto``: the machine tries to activate it after every change;
* ``multi``: every add re-activates it (handlers run again, tick += 2).

Every handler that runs is recorded by an extra binding made with
``mach.bind_handler_maps`` and printed after each mutation, so you can see the order of
machine.md §5.6: exits, enters, self, state-state, ``any_enter``, ends, states,
``any_state``.
"""

from __future__ import annotations

from collections.abc import Callable

import trio_am as am
from trio_am.schemas import CONNECTED_SCHEMA

CHAT_SCHEMA: dict[str, dict[str, object]] = {
    # logging in brings Presence and History along (add), both need LoggedIn (require)
    "LoggedIn": {"require": ["Connected"], "add": ["History", "Presence"]},
    "Presence": {"require": ["LoggedIn"]},
    # History's handlers run after Presence's, whatever the order of the add list
    "History": {"require": ["LoggedIn"], "after": ["Presence"]},
    # Ready (overrides BASIC_SCHEMA's) turns on by itself when its requirements hold
    "Ready": {"auto": True, "require": ["LoggedIn", "History"]},
    # one activation per incoming message
    "Message": {"multi": True, "require": ["LoggedIn"]},
    # do-not-disturb hides our presence
    "DoNotDisturb": {"remove": ["Presence"]},
}

SCHEMA = am.schema_merge(am.BASIC_SCHEMA, CONNECTED_SCHEMA, CHAT_SCHEMA)

Handler = Callable[[am.Event], None]
calls: list[str] = []


def record(e: am.Event) -> None:
    """A catch-all handler: remembers which handler ran (and accepts)."""
    calls.append(e.name)


def recorder_maps(mach: am.Machine) -> tuple[dict[str, Handler], dict[str, Handler]]:
    """Handler maps naming ``record`` for every state's enter/exit/state/end, plus one
    self handler (``Message_Message``) and one state-state handler."""
    negotiation: dict[str, Handler] = {"any_enter": record}
    final: dict[str, Handler] = {"any_state": record}
    for s in mach.state_names:
        negotiation[f"{s}_exit"] = negotiation[f"{s}_enter"] = record
        final[f"{s}_end"] = final[f"{s}_state"] = record
    # self handler: Message was active and stays in the target (add and set only)
    negotiation["Message_Message"] = record
    # state-state: DoNotDisturb was active and Message is in the target
    negotiation["DoNotDisturb_Message"] = record
    return negotiation, final


class ChatHandlers:
    """The chat's real logic (bound after the recorder, so the recorder sees vetoes)."""

    def LoggedIn_enter(self, e: am.Event) -> bool:
        # negotiation: refuse a login without a user name
        return bool(e.args.get("user"))

    def any_enter(self, e: am.Event) -> None:
        # the last negotiation handler: the resolved target set is known here
        tx = e.transition
        print(f"  target of {tx.type} {tx.called_states()}: {tx.target_states}")

    def DoNotDisturb_Message(self, e: am.Event) -> bool:
        # state-state handler: DoNotDisturb was active and Message is in the target.
        # It also runs for unrelated transitions while Message stays active, so only
        # judge transitions that call Message.
        if "Message" not in e.transition.called_states():
            return True
        urgent = bool(e.args.get("urgent"))
        if not urgent:
            print("  DoNotDisturb_Message: veto, not urgent")
        return urgent


def step(mach: am.Machine, title: str, result: am.Result) -> None:
    """Print one mutation: its result, the handlers that ran and the active states."""
    print(f"{title}: {result!r}")
    print(f"  handlers: {', '.join(calls) or '(none)'}")
    print(f"  active:   {mach}")
    calls.clear()


def main() -> None:
    mach = am.Machine(SCHEMA, id="chat")
    neg, fin = recorder_maps(mach)
    # bound first: for each handler name, bindings run in binding order, so the
    # recorder also sees the handlers that the chat logic then uses to veto
    mach.bind_handler_maps(neg, fin, id="recorder")
    mach.bind_handlers(ChatHandlers())

    print("# Start: Disconnected is auto, so an extra auto transition activates it")
    step(mach, "add1 Start", mach.add1("Start"))

    print("\n# The connection group excludes itself: one member at a time")
    step(mach, "add1 Connecting", mach.add1("Connecting"))
    step(mach, "add1 Connected", mach.add1("Connected"))

    print("\n# A negotiation handler vetoes: nothing changes")
    step(mach, "add1 LoggedIn", mach.add1("LoggedIn"))

    print("\n# add: LoggedIn implies History and Presence; after: Presence runs first;")
    print("# then the auto state Ready follows in its own transition")
    step(mach, "add1 LoggedIn user=ada", mach.add1("LoggedIn", {"user": "ada"}))

    print("\n# multi: every add re-activates Message (tick +2)")
    step(mach, "add1 Message", mach.add1("Message", {"text": "hi"}))
    step(mach, "add1 Message", mach.add1("Message", {"text": "how are you?"}))
    print("  Message tick:", mach.tick("Message"))

    print("\n# remove: DoNotDisturb deactivates Presence")
    step(mach, "add1 DoNotDisturb", mach.add1("DoNotDisturb"))

    print("\n# Canceled mutations")
    step(mach, "add1 Presence (blocked by active DoNotDisturb)", mach.add1("Presence"))
    both = mach.add(["Connecting", "Connected"])
    step(mach, "add Connecting Connected (exclude each other)", both)
    step(mach, "add1 Message (state-state veto)", mach.add1("Message", {"text": "spam"}))
    step(mach, "add1 Message urgent", mach.add1("Message", {"text": "!", "urgent": True}))

    print("\n# require: removing Connected removes everything that needs it, dependencies")
    print("# first; then Disconnected (auto) comes back")
    step(mach, "remove1 Connected", mach.remove1("Connected"))

    print("\nfinal:", mach.string_all())


if __name__ == "__main__":
    main()
