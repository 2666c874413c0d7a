"""shoal.pyi and the compiled module agree: every class the stubs declare exists, with every
method and attribute they give it, and the module has no public class the stubs leave out.
(Needs no cluster.)"""

import ast
import inspect
import os

import shoal

STUBS = os.path.join(os.path.dirname(__file__), "..", "shoal.pyi")


def stub_classes():
    tree = ast.parse(open(STUBS, encoding="utf-8").read())
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members[item.name] = item.args
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members[item.target.id] = None
            classes[node.name] = members
    return classes


def test_every_stub_class_and_member_exists():
    classes = stub_classes()
    assert "Client" in classes and "Stat" in classes
    missing = []
    for name, members in classes.items():
        runtime = getattr(shoal, name, None)
        if not isinstance(runtime, type):
            missing.append(name)
            continue
        missing += [f"{name}.{m}" for m in sorted(members) if not hasattr(runtime, m)]
    assert missing == [], f"declared in shoal.pyi, absent from the module: {missing}"


def test_every_public_class_is_declared():
    classes = stub_classes()
    public = {n for n in dir(shoal) if not n.startswith("_") and isinstance(getattr(shoal, n), type)}
    assert public - set(classes) == set(), "in the module, missing from shoal.pyi"


def names(args):
    """The parameter names of a stub's def, as (positional, keyword-only), without self."""
    positional = [a.arg for a in args.posonlyargs + args.args if a.arg != "self"]
    return positional, [a.arg for a in args.kwonlyargs]


def test_stub_signatures_match_the_module():
    """Parameter names and their kinds (positional or keyword-only) are the module's, so the
    stubs cannot offer a keyword the binding lacks (or miss one it has)."""
    differ = []
    for name, members in stub_classes().items():
        runtime = getattr(shoal, name)
        for member, args in members.items():
            if args is None or (member.startswith("__") and member != "__init__"):
                continue  # an attribute, or a protocol slot (__enter__, __next__...)
            target = runtime if member == "__init__" else getattr(runtime, member)
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                continue  # no text signature to compare with
            params = [p for p in signature.parameters.values() if p.name != "self"]
            keyword = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
            positional = [
                p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if (positional, keyword) != names(args):
                differ.append(f"{name}.{member}: module {(positional, keyword)}, stub {names(args)}")
    assert differ == [], "\n".join(differ)
