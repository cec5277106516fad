"""`[collections]`: tables of records that nodes create, update, destroy and query.

Each collection is a real table (`records_<name>`) with its declared fields as columns and a
unique index per `unique` entry.  Statements are built here from a node's rendered settings;
values are checked against the declared types, filters use SPEC's operators
(eq ne gt gte lt lte in like).  The statements are written to run on SQLite and PostgreSQL
alike (`?` placeholders, which the PostgreSQL connector numbers); only the tables' types differ
(`ddl(dialect)`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import orjson

from ..core.errors import FastwebhookError
from ..store.rows import NewRow, Write
from ..core.units import timestamp
from .templates import compile_value

TYPES = {"string": "TEXT", "text": "TEXT", "integer": "INTEGER", "number": "REAL",
         "boolean": "INTEGER", "json": "TEXT", "datetime": "TEXT"}
DIALECT_TYPES = {"sqlite": TYPES,
                 "postgres": {**TYPES, "integer": "BIGINT", "number": "DOUBLE PRECISION", "boolean": "BIGINT"}}
ID_COLUMN = {"sqlite": "id INTEGER PRIMARY KEY", "postgres": "id BIGSERIAL PRIMARY KEY"}
BUILT_IN = ("id", "created_at", "updated_at")
FILTER_OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "IN", "like": "LIKE"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A LIKE is matched within one step of the database's engine, which no time budget can stop:
# against a value of n characters it costs up to n times the pattern's length (3,000
# characters against one large record held the store 1.7 s).  The count of wildcards adds
# little (SQLite and PostgreSQL both give up a '%' that cannot match), so the length is bounded.
MAX_LIKE_PATTERN = 128
MAX_INSERTS = 64           # insert statements kept made, per collection


class RecordError(FastwebhookError):
    """A value or filter a collection cannot take: says which field and why."""


@dataclass(frozen=True)
class Collection:
    name: str
    fields: Mapping[str, str]                 # field -> type
    unique: tuple[tuple[str, ...], ...]

    @property
    def table(self) -> str:
        return f'"records_{self.name}"'

    @property
    def columns(self) -> tuple[str, ...]:
        return ("id", *self.fields, "created_at", "updated_at")

    @cached_property   # frozen dataclasses allow it: built once, asked per statement
    def _returning(self) -> str:
        return ", ".join(f'"{c}"' for c in self.columns)

    # -- schema -----------------------------------------------------------------------------
    def ddl(self, dialect: str = "sqlite") -> list[str]:
        types = DIALECT_TYPES[dialect]
        columns = ", ".join(f'"{f}" {types[t]}' for f, t in self.fields.items())
        statements = [f"CREATE TABLE IF NOT EXISTS {self.table} ({ID_COLUMN[dialect]}, {columns}, "
                      "created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"]
        for number, fields in enumerate(self.unique):
            index = f'"records_{self.name}_unique_{number}"'
            listed = ", ".join(f'"{f}"' for f in fields)
            statements.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {self.table} ({listed})")
        return statements

    def add_column(self, field: str, dialect: str = "sqlite") -> str:
        return f'ALTER TABLE {self.table} ADD COLUMN "{field}" {DIALECT_TYPES[dialect][self.fields[field]]}'

    # -- statements -------------------------------------------------------------------------
    def insert(self, values: Mapping[str, Any], upsert_on: tuple[str, ...] = ()) -> Write:
        row = self.encode_values(values)
        now = _now()
        sql, new_row = self._insert_sql(tuple(row), upsert_on)
        return Write(sql, (*row.values(), now, now), new_row)

    @cached_property
    def _inserts(self) -> dict:
        return {}

    def _insert_sql(self, fields: tuple[str, ...], upsert_on: tuple[str, ...]) -> tuple[str, NewRow | None]:
        """The insert of these fields (and the times), made once per set of fields: a cohort's
        creates all give the same.  A plain insert's new row is known as written (NewRow): the
        values it was given are what the columns hold (each was encoded to its column's type),
        NULL elsewhere, as no column has a default."""
        made = self._inserts.get((fields, upsert_on))
        if made is not None:
            return made
        if len(self._inserts) >= MAX_INSERTS:   # values rendered from webhook data may give any subset
            self._inserts.clear()
        names = (*fields, "created_at", "updated_at")
        listed = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" * len(names))
        sql = f"INSERT INTO {self.table} ({listed}) VALUES ({marks})"
        new_row = None
        if upsert_on:
            updates = [f'"{n}" = excluded."{n}"' for n in fields if n not in upsert_on] \
                + ['"updated_at" = excluded."updated_at"']
            conflict = ", ".join(f'"{f}"' for f in upsert_on)
            sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(updates)}"
        else:
            new_row = NewRow(f'INSERT INTO {self.table} ("id", {listed}) VALUES (?, {marks})',
                             f'SELECT max("id") FROM {self.table}', names, self.columns)
        made = self._inserts[(fields, upsert_on)] = (f"{sql} RETURNING {self._returning}", new_row)
        return made

    def update(self, terms: list, values: Mapping[str, Any]) -> Write:
        row = self.encode_values(values)
        where, params = self.where(terms)
        sets = ", ".join([f'"{n}" = ?' for n in row] + ['"updated_at" = ?'])
        return Write(f"UPDATE {self.table} SET {sets}{where}", (*row.values(), _now(), *params))

    def destroy(self, terms: list) -> Write:
        where, params = self.where(terms)
        return Write(f"DELETE FROM {self.table}{where}", params)

    def select(self, terms: list, sort: tuple[str, ...] = (), limit: int | None = None,
               offset: int = 0, *, nulls: bool = False) -> tuple[str, tuple]:
        where, params = self.where(terms, nulls=nulls)
        order = ", ".join(f'"{s[1:]}" DESC' if s.startswith("-") else f'"{s}" ASC' for s in sort) or '"id" ASC'
        sql = f"SELECT {self._returning} FROM {self.table}{where} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params = (*params, limit, offset)
        return sql, params

    def where(self, terms: list[tuple[str, str, Any]], *, nulls: bool = False) -> tuple[str, tuple]:
        """`terms` are (field, op, value), split from the filter table where it was written
        (`filter_terms`): a value rendered from webhook data is only ever a value, never an
        operator.  A None value (a template that found nothing) matches nothing, so a missing
        field cannot widen an update or a destroy; with `nulls` (the admin API's JSON filters,
        where null is written on purpose) eq / ne null mean IS NULL / IS NOT NULL."""
        clauses, params = [], []
        for field, op, value in terms:
            kind = self._kind(field)
            if op not in FILTER_OPS:
                raise RecordError(f"filter on {field!r}: unknown operator {op!r} (known: {' '.join(FILTER_OPS)})")
            column = f'"{field}"'
            if value is None:
                clauses.append(f"{column} IS {'NOT ' if op == 'ne' else ''}NULL" if nulls and op in ("eq", "ne") else "1 = 0")
            elif op == "in":
                items = [item for item in (value if isinstance(value, list) else [value]) if item is not None]
                clauses.append(f"{column} IN ({', '.join('?' * len(items))})" if items else "1 = 0")
                params.extend(_encode(field, kind, item) for item in items)
            elif op == "ne":   # NULL-safe: a record without the field is not equal to the value
                clauses.append(f"{column} IS DISTINCT FROM ?")
                params.append(_encode(field, kind, value))
            elif op == "like":
                pattern = str(value)
                if len(pattern) > MAX_LIKE_PATTERN:
                    raise RecordError(f"filter on {field!r}: a like pattern may be at most {MAX_LIKE_PATTERN} "
                                      f"characters, not {len(pattern)}")
                # lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not
                clauses.append(f"lower(CAST({column} AS TEXT)) LIKE lower(?)")
                params.append(pattern)
            else:
                clauses.append(f"{column} {FILTER_OPS[op]} ?")
                params.append(_encode(field, kind, value))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)

    # -- values ------------------------------------------------------------------------------
    def encode_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(values, dict) and not isinstance(values, Mapping):   # dict: the cheap check first
            raise RecordError(f"values for {self.name} must be a table of field = value")
        row = {}
        for field, value in values.items():
            if field not in self.fields:
                raise RecordError(f"{self.name} has no field {field!r} (fields: {', '.join(self.fields)})")
            row[field] = _encode(field, self.fields[field], value)
        return row

    def decode(self, row: tuple | None) -> dict | None:
        if row is None:
            return None
        record = {}
        for name, value in zip(self.columns, row):
            kind = self.fields.get(name)
            if value is not None and kind == "boolean":
                value = bool(value)
            elif value is not None and kind == "json":
                value = orjson.loads(value)
            record[name] = value
        return record

    def _kind(self, field: str) -> str:
        if field == "id":
            return "integer"
        if field in ("created_at", "updated_at"):
            return "datetime"
        if field not in self.fields:
            raise RecordError(f"{self.name} has no field {field!r} to filter on (fields: {', '.join(self.columns)})")
        return self.fields[field]


def filter_terms(filter: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """A filter table (field = value, or field = { op = value, ... }) as (field, op, value)
    terms, split where the filter is written: in the config, or the admin API's JSON."""
    terms = []
    for field, condition in filter.items():
        for op, value in (condition.items() if isinstance(condition, dict) else (("eq", condition),)):
            terms.append((field, op, value))
    return terms


def _encode(field: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "number":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "boolean":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return int(value.lower() in ("true", "1"))
            if isinstance(value, (bool, int)):
                return int(bool(value))
            raise ValueError
        if kind == "json":
            return orjson.dumps(value).decode()
    except (ValueError, TypeError, OverflowError):
        raise RecordError(f"field {field!r} holds {kind} values, not {value!r}") from None
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _now() -> str:
    return timestamp(time.time())


# -- config ------------------------------------------------------------------------------------
def load_collections(loader, table: dict, path: str) -> dict[str, Collection]:
    collections = {}
    for name, spec in table.items():
        where = f"{path}.{name}"
        if not _NAME.match(name):
            loader.error(where, "a collection name may hold only letters, digits and '_' (and not start with a digit)")
            continue
        if not isinstance(spec, dict):
            loader.error(where, "must be a table with fields = { name = \"type\", ... }")
            continue
        loader.unknown_keys(spec, {"fields", "unique"}, where)
        fields = spec.get("fields", {})
        if not isinstance(fields, dict) or not fields:
            loader.error(f"{where}.fields", "must be a non-empty table of field = type")
            continue
        checked = {}
        for field, kind in fields.items():
            if not _NAME.match(field):
                loader.error(f"{where}.fields.{field}", "a field name may hold only letters, digits and '_'")
            elif field in BUILT_IN:
                loader.error(f"{where}.fields.{field}", f"{field!r} is built in (every record has id, created_at, updated_at)")
            elif kind not in TYPES:
                loader.error(f"{where}.fields.{field}", f"unknown type {kind!r} (known: {', '.join(TYPES)})")
            else:
                checked[field] = kind
        unique = []
        entries = spec.get("unique", [])
        if not isinstance(entries, list):
            loader.error(f"{where}.unique", "must be a list of field lists, e.g. [[\"email\"]]")
            entries = []
        for i, entry in enumerate(entries):
            entry = [entry] if isinstance(entry, str) else entry
            if not isinstance(entry, list) or not entry or any(f not in checked for f in entry):
                loader.error(f"{where}.unique[{i}]", f"must list declared fields, not {entry!r}")
                continue
            unique.append(tuple(entry))
        collections[name] = Collection(name, checked, tuple(unique))
    return collections


# -- what the collection nodes share ---------------------------------------------------------------
def compile_filter(filter: Any) -> list[tuple[str, str, Any]]:
    """At load: the filter's terms, each value compiled (a template, or a constant)."""
    if not isinstance(filter, Mapping):
        return []
    return [(field, op, compile_value(value)) for field, op, value in filter_terms(filter)]


def render_filter(terms: list[tuple[str, str, Any]], run) -> list[tuple[str, str, Any]]:
    return [(field, op, run.render(value)) for field, op, value in terms]

def collection_named(fields: Mapping[str, Any], path: str, report, known) -> Collection | None:
    name = fields.get("collection")
    if not isinstance(name, str) or not name:
        report(f"{path}.collection", "must name a collection")
        return None
    found = known.collections.get(name)
    if found is None:
        declared = ", ".join(sorted(known.collections)) or "none declared"
        report(f"{path}.collection", f"no collection {name!r} in [collections] ({declared})")
    return found


def check_fields(collection: Collection | None, table: Any, path: str, report, *, filter: bool = False) -> None:
    """The names a node's `values` or `filter` uses exist (values may be templates)."""
    if collection is None:
        return
    if not isinstance(table, dict):
        report(path, "must be a table of field = value")
        return
    known = collection.columns if filter else tuple(collection.fields)
    for name, value in table.items():
        if name not in known:
            report(f"{path}.{name}", f"{collection.name} has no field {name!r} (fields: {', '.join(known)})")
        elif filter and isinstance(value, dict):
            for op in value:
                if op not in FILTER_OPS:
                    report(f"{path}.{name}.{op}", f"unknown filter operator {op!r} (known: {' '.join(FILTER_OPS)})")
