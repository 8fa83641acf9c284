"""Filter mined pairs by an expression over the shard indexes, without opening the tars.

    python -m pipelines.pairs.select out/world/pairs "score > 0.25 and margin > 0.03 and noun in ('cat', 'dog')" \\
        --out out/world/pairs-selected          # new committed shards (+ index, sizes.json)
    python -m pipelines.pairs.select out/world/pairs "strategy == 'one_to_one'" --keys keys.txt

The expression uses the columns of ``pairs-%06d.parquet`` (:data:`pipelines.pairs.format.INDEX_COLUMNS`
plus ``unit``) with pandas ``DataFrame.query`` semantics for what it accepts: comparisons (also
chained), ``and`` / ``or`` / ``not`` (``&``, ``|``, ``~``), ``in`` / ``not in`` over a literal list,
``+ - * /`` and numeric / string literals. A null (e.g. ``margin`` of an image with one noun) fails
every comparison, as NaN does in pandas. It is parsed into a whitelisted syntax tree and evaluated
with pyarrow compute: no Python is ever evaluated. ``data.filter`` of the tuning config applies the
same expression while streaming (:mod:`pipelines.pairs.stream`).
"""
from __future__ import annotations

import argparse
import ast
import collections
import io
import json
import logging
import sys
import tokenize
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.pairs.format import (INDEX_COLUMNS, INDEX_NAME, PairMeta, committed_indices, index_bytes, index_row,
                                    index_schema, iter_tar, list_names, read_folder_index, read_index, shard_url)

log = logging.getLogger(__name__)

COLUMNS = tuple(INDEX_COLUMNS) + ("unit",)
_CMP = {ast.Gt: pc.greater, ast.GtE: pc.greater_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
        ast.Eq: pc.equal, ast.NotEq: pc.not_equal}
_ARITH = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}


class FilterError(ValueError):
    """The expression uses something outside the accepted grammar or an unknown column."""


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)):
        return -node.operand.value
    raise FilterError(f"expected a number or string literal, got {ast.unparse(node)!r}")


def _false_if_null(mask: pa.Array) -> pa.Array:
    return pc.fill_null(mask, False)


def _evaluate(node: ast.AST, table: pa.Table) -> Any:
    """A boolean mask (``pa.Array``) or a value column / literal for ``node`` over ``table``."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, table)
    if isinstance(node, ast.BoolOp):
        parts = [_as_mask(_evaluate(v, table)) for v in node.values]
        combine = pc.and_ if isinstance(node.op, ast.And) else pc.or_
        out = parts[0]
        for p in parts[1:]:
            out = combine(out, p)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return pc.invert(_as_mask(_evaluate(node.operand, table)))
    if isinstance(node, ast.Compare):
        left, out = _evaluate(node.left, table), None
        for op, right_node in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                    raise FilterError(f"'in' needs a literal list, got {ast.unparse(right_node)!r}")
                values = [_literal(v) for v in right_node.elts]
                if not isinstance(left, (pa.Array, pa.ChunkedArray)):
                    raise FilterError("'in' needs a column on its left")
                mask = _false_if_null(pc.is_in(left, value_set=pa.array(values, type=left.type if values else None)))
                if isinstance(op, ast.NotIn):
                    mask = pc.invert(mask)
                right = None
            elif type(op) in _CMP:
                right = _evaluate(right_node, table)
                mask = _false_if_null(_CMP[type(op)](left, right))
            else:
                raise FilterError(f"operator {type(op).__name__} is not supported")
            out = mask if out is None else pc.and_(out, mask)
            left = right
        return out
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_evaluate(node.left, table), _evaluate(node.right, table))
    if isinstance(node, ast.Name):
        if node.id not in table.column_names or node.id not in COLUMNS:
            raise FilterError(f"unknown column {node.id!r}; columns: {', '.join(COLUMNS)}")
        if node.id == "box":
            raise FilterError("box is a list column: filter on area or the box's own numbers elsewhere")
        return table.column(node.id)
    if isinstance(node, (ast.Constant, ast.UnaryOp)):
        return pa.scalar(_literal(node))
    raise FilterError(f"{type(node).__name__} is not allowed in a filter expression: {ast.unparse(node)!r}")


def _as_mask(value: Any) -> Any:
    if isinstance(value, (pa.Array, pa.ChunkedArray)) and pa.types.is_boolean(value.type):
        return _false_if_null(value)
    raise FilterError("and / or / not need comparisons on both sides")


def _pandas_operators(expression: str) -> str:
    """``&``, ``|``, ``~`` as ``and``, ``or``, ``not`` (outside string literals): pandas' query gives them the
    precedence of the boolean words, below comparisons and ``in``."""
    words = {"&": "and", "|": "or", "~": "not"}
    tokens = [(tokenize.NAME, words[t.string]) if t.type == tokenize.OP and t.string in words else (t.type, t.string)
              for t in tokenize.generate_tokens(io.StringIO(expression).readline)]
    return tokenize.untokenize(tokens)


def compile_filter(expression: str) -> Callable[[pa.Table], pa.Array]:
    """``table → boolean mask`` for ``expression``; raises :class:`FilterError` on anything outside the
    grammar (checked now on an empty index, not when the first shard is read)."""
    try:
        tree = ast.parse(_pandas_operators(expression.strip()), mode="eval")
    except (SyntaxError, tokenize.TokenError) as err:
        raise FilterError(f"cannot parse filter {expression!r}: {err.msg}") from None

    def run(table: pa.Table) -> pa.Array:
        mask = _evaluate(tree, table)
        if not isinstance(mask, (pa.Array, pa.ChunkedArray)) or not pa.types.is_boolean(mask.type):
            raise FilterError(f"filter {expression!r} does not give true / false per row")
        return _false_if_null(mask)

    run(index_schema().empty_table().append_column("unit", pa.array([], pa.int64())))
    return run


def select_rows(table: pa.Table, expression: str) -> pa.Table:
    """The rows of an index ``table`` that ``expression`` keeps."""
    return table.filter(compile_filter(expression)(table))


def selected_keys(folder: str, expression: str, storage_options: Optional[dict] = None) -> list[str]:
    """Keys of the pairs of the committed shards in ``folder`` that ``expression`` keeps (unit, tar order)."""
    return select_rows(read_folder_index(folder, storage_options), expression).column("key").to_pylist()


def select_folder(src: str, dst: str, expression: str, *, storage_options: Optional[dict] = None) -> dict[str, int]:
    """Copy the pairs ``expression`` keeps from the committed shards of ``src`` into new committed shards
    of ``dst`` (same unit numbers, each with its index and marker) and write ``sizes.json``.

    Returns:
        ``shard name → pairs kept`` (the new sizes.json).
    """
    from pipelines.pairs.writer import ShardWriter, write_sizes

    keep = compile_filter(expression)
    stats: dict[int, dict] = {}
    for unit in committed_indices(list_names(src, storage_options)):
        table = read_index(src, unit, storage_options)
        keys = set(table.filter(keep(table)).column("key").to_pylist())
        rows = []
        skips: collections.Counter = collections.Counter()
        with ShardWriter(dst, unit, storage_options) as writer:
            for sample in iter_tar(shard_url(src, unit), skips, storage_options):
                if sample["__key__"] in keys:
                    writer.write({k: v for k, v in sample.items() if k != "__url__"})
                    rows.append(index_row(sample["__key__"], PairMeta.from_json(sample["json"])))
            writer.add_side_file(INDEX_NAME.format(unit), index_bytes(rows))
            result = {"unit": unit, "pairs": len(rows), "selected_from": src, "filter": expression,
                      "skipped": dict(skips)}
            writer.commit(result)
        stats[unit] = dict(result, pairs_written=len(rows))
    return write_sizes(dst, stats, storage_options)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="a mined folder (committed shards with their parquet indexes)")
    ap.add_argument("filter", help="expression over the index columns: " + ", ".join(COLUMNS))
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", help="write the kept pairs as new committed shards into this folder")
    group.add_argument("--keys", help="write the kept keys, one a line, into this file ('-' = stdout)")
    ap.add_argument("--storage-options", default="{}", help="fsspec options (JSON) of both folders")
    args = ap.parse_args(argv)
    options = json.loads(args.storage_options)
    try:
        if args.out:
            sizes = select_folder(args.src, args.out, args.filter, storage_options=options)
            print(f"kept {sum(sizes.values())} pairs in {len(sizes)} shards -> {args.out}")
        else:
            keys = selected_keys(args.src, args.filter, options)
            text = "".join(k + "\n" for k in keys)
            if args.keys == "-":
                sys.stdout.write(text)
            else:
                with open(args.keys, "w") as f:
                    f.write(text)
                print(f"kept {len(keys)} keys -> {args.keys}")
    except FilterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
