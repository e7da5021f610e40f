"""The sans-I/O core of trio_am: schema, resolver, engine. Imports no Trio."""

from ._engine import Engine as Engine
from ._resolver import resolve as resolve
from ._resolver import sort_states as sort_states
from ._schema import BUILTIN_EXCEPTION as BUILTIN_EXCEPTION
from ._schema import Compiled as Compiled
from ._schema import Schema as Schema
from ._schema import SchemaLike as SchemaLike
from ._schema import State as State
from ._schema import normalize_schema as normalize_schema
from ._schema import schema_merge as schema_merge
from ._schema import states_by_tag as states_by_tag
from ._subs import CtxBase as CtxBase
from ._subs import Sub as Sub
from ._tracer import TracerBase as TracerBase
from ._types import Event as Event
from ._types import LogLevel as LogLevel
from ._types import Mutation as Mutation
from ._types import MutationType as MutationType
from ._types import MutSource as MutSource
from ._types import Result as Result
from ._types import Time as Time
from ._types import Transition as Transition
