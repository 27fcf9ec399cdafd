"""The longest functions of a package: lines of the body (the statements after the
signature and docstring) and lines in all (definition to last line, decorators excluded).
A command's signature is its option declarations, so the body is what measures how much
a function does.

    python bench/function_lengths.py            (the top 10 of mt/ by body)
    python bench/function_lengths.py --top 20 mt
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def function_lengths(package: Path) -> list[tuple[int, int, str]]:
    """(body lines, all lines, 'path:line name') of every function and method under `package`, longest body first."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]  # the docstring
                lines = node.end_lineno - body[0].lineno + 1
                found.append((lines, node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", type=Path, default=Path("mt"))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    print(" body    all  function")
    for body, total, where in function_lengths(args.package)[: args.top]:
        print(f"{body:5d}  {total:5d}  {where}")


if __name__ == "__main__":
    main()
