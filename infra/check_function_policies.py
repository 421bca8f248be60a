#!/usr/bin/env python3
"""Checks DynamoDB calls the functions made against their policies in template.yaml.

Usage: check_function_policies.py TEMPLATE CALLS_JSON

CALLS_JSON is a list of {"function": <logical id>, "action": "dynamodb:GetItem",
"resource": "table" | "index/<name>", "leading_keys": [...]} as recorded by
`tests/tests/function_policies.rs` (moto does not enforce IAM, so a policy that refuses
a call the code makes is otherwise found only on AWS). A call is allowed when one Allow
statement of its function names the action, the table (or its indexes) and, if it has a
`dynamodb:LeadingKeys` condition, matches every leading key. Statements under `!If` count
in either branch. Prints each refused call and exits 1 if there is one.
"""
import fnmatch
import json
import sys

import yaml  # PyYAML: installed with cfn-lint in the test venv


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tag)


def statements(policies):
    """Every statement of a function's Policies, both branches of each If."""
    out = []

    def walk(x):
        if isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            if "If" in x and isinstance(x["If"], list) and len(x["If"]) == 3:
                walk(x["If"][1])
                walk(x["If"][2])
            elif "Statement" in x:
                walk(x["Statement"])
            elif "Effect" in x:
                out.append(x)

    walk(policies)
    return out


def resource_kinds(resource):
    """What a statement's Resource covers of the table: {"table"}, {"index/*"}, …"""
    kinds = set()
    for r in resource if isinstance(resource, list) else [resource]:
        if r == {"GetAtt": "Table.Arn"}:
            kinds.add("table")
        elif isinstance(r, dict) and "Sub" in r and "Table.Arn}" in str(r["Sub"]):
            tail = str(r["Sub"]).split("Table.Arn}", 1)[1]
            kinds.add(tail.lstrip("/") or "table")
        elif r == "*":
            kinds.add("*")
    return kinds


def allows(stmt, call):
    if stmt.get("Effect") != "Allow":
        return False
    actions = stmt.get("Action", [])
    actions = actions if isinstance(actions, list) else [actions]
    if not any(fnmatch.fnmatchcase(call["action"], a) for a in actions):
        return False
    kinds = resource_kinds(stmt.get("Resource"))
    if not any(k == "*" or fnmatch.fnmatchcase(call["resource"], k) for k in kinds):
        return False
    cond = stmt.get("Condition", {})
    like = cond.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
    equals = cond.get("ForAllValues:StringEquals", {}).get("dynamodb:LeadingKeys")
    if like is None and equals is None:
        return True
    as_list = lambda v: [] if v is None else (v if isinstance(v, list) else [v])
    keys = call["leading_keys"]
    return bool(keys) and all(
        any(fnmatch.fnmatchcase(k, p) for p in as_list(like)) or k in as_list(equals)
        for k in keys
    )


def main():
    template_path, calls_path = sys.argv[1], sys.argv[2]
    with open(template_path) as f:
        template = yaml.load(f, Loader=CfnLoader)
    with open(calls_path) as f:
        calls = json.load(f)
    resources = template["Resources"]
    refused = []
    seen = set()
    for call in calls:
        fn = resources.get(call["function"])
        if fn is None:
            refused.append((call, "no such function in the template"))
            continue
        stmts = statements(fn.get("Properties", {}).get("Policies", []))
        sig = json.dumps(call, sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        if not any(allows(s, call) for s in stmts):
            refused.append((call, "no statement allows it"))
    for call, why in refused:
        print(
            f"{call['function']}: {call['action']} on {call['resource']} "
            f"with leading keys {call['leading_keys']}: {why}"
        )
    print(f"{len(seen)} distinct calls checked, {len(refused)} refused")
    sys.exit(1 if refused else 0)


if __name__ == "__main__":
    main()
